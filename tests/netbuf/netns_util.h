// Test-only helpers for the netbuf tests (host GoogleTest and the QEMU lab
// program): network namespaces and veth pairs made with iproute2, entering a
// namespace for the current thread, and UDP/ICMP sockets created inside one.
//
// Sockets keep the namespace they were created in, so a single-threaded test
// can create the "guest" sender in one namespace and the "peer" receiver in
// another by entering each in turn (setns), then drive both from anywhere.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

namespace romulus::netbuf::testing {

// Runs a shell command, output hidden unless ROMULUS_NETBUF_VERBOSE is set;
// returns its exit code.
inline int Sh(const std::string& cmd) {
  std::string full = std::getenv("ROMULUS_NETBUF_VERBOSE") ? cmd : cmd + " >/dev/null 2>&1";
  int rc = std::system(full.c_str());
  return rc == -1 ? -1 : WEXITSTATUS(rc);
}

// Runs a shell command and returns its stdout.
inline std::string ShOut(const std::string& cmd) {
  std::string out;
  FILE* f = popen((cmd + " 2>/dev/null").c_str(), "r");
  if (!f) return out;
  char buf[512];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), f)) > 0) out.append(buf, n);
  pclose(f);
  return out;
}

// The absolute path of iproute2's TOOL ("ip", "tc"). Commands run through
// /bin/sh, and busybox's sh (the lab VM's) runs its own applets in preference
// to PATH: busybox's ip has no `netns` and it has no tc. A path with a slash
// is always exec'd.
inline std::string Tool(const std::string& tool) {
  for (const char* dir : {"/usr/sbin/", "/sbin/", "/usr/bin/", "/bin/"}) {
    std::string path = dir + tool;
    char target[256];
    ssize_t n = readlink(path.c_str(), target, sizeof(target) - 1);
    if (n > 0 && std::string(target, n).find("busybox") != std::string::npos) continue;
    if (access(path.c_str(), X_OK) == 0) return path;
  }
  return tool;
}
inline const std::string& IpBin() {
  static const std::string p = Tool("ip");
  return p;
}
inline const std::string& TcBin() {
  static const std::string p = Tool("tc");
  return p;
}

// `ip netns add NAME` for the lifetime of the object; deleted on destruction
// (which also destroys every device still inside it).
class Netns {
 public:
  static std::unique_ptr<Netns> Create(const std::string& name) {
    Sh(IpBin() + " netns del " + name);  // a leftover of an interrupted run
    if (Sh(IpBin() + " netns add " + name) != 0) return nullptr;
    int fd = open(("/run/netns/" + name).c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      Sh(IpBin() + " netns del " + name);
      return nullptr;
    }
    return std::unique_ptr<Netns>(new Netns(name, fd));
  }
  ~Netns() {
    close(fd_);
    Sh(IpBin() + " netns del " + name_);
  }
  const std::string& name() const { return name_; }
  int fd() const { return fd_; }
  // "ip -n NAME " prefix for commands run in this namespace.
  std::string ip() const { return IpBin() + " -n " + name_ + " "; }
  // "tc -n NAME " prefix.
  std::string tc() const { return TcBin() + " -n " + name_ + " "; }

 private:
  Netns(std::string name, int fd) : name_(std::move(name)), fd_(fd) {}
  std::string name_;
  int fd_;
};

// Enters a namespace for the calling thread; returns to the original on
// destruction.
class InNetns {
 public:
  explicit InNetns(const Netns& ns) {
    orig_ = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    ok_ = orig_ >= 0 && setns(ns.fd(), CLONE_NEWNET) == 0;
  }
  ~InNetns() {
    if (orig_ >= 0) {
      if (setns(orig_, CLONE_NEWNET) != 0) std::perror("setns back");
      close(orig_);
    }
  }
  bool ok() const { return ok_; }

 private:
  int orig_ = -1;
  bool ok_ = false;
};

// A UDP socket bound to ADDR:PORT (port 0: any), created in the current namespace.
inline int UdpSocket(const std::string& addr, uint16_t port) {
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  int big = 4 << 20;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  inet_pton(AF_INET, addr.c_str(), &sa.sin_addr);
  if (bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

inline sockaddr_in Addr(const std::string& addr, uint16_t port) {
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  inet_pton(AF_INET, addr.c_str(), &sa.sin_addr);
  return sa;
}

// Waits up to TIMEOUT_MS for FD to become readable.
inline bool Readable(int fd, int timeout_ms) {
  pollfd p{fd, POLLIN, 0};
  return poll(&p, 1, timeout_ms) > 0 && (p.revents & POLLIN);
}

}  // namespace romulus::netbuf::testing
