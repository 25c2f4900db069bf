#include "cli/spawn.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cstdlib>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <thread>

namespace romulus::cli {

std::string SelfExe() {
  char buf[4096];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return "romulus";
  buf[n] = 0;
  return buf;
}

std::string JsonField(const std::string& line, const std::string& key) {
  auto p = line.find("\"" + key + "\":");
  if (p == std::string::npos) return "";
  p += key.size() + 3;
  if (p < line.size() && line[p] == '"') {
    auto e = line.find('"', p + 1);
    if (e == std::string::npos) return "";
    return line.substr(p + 1, e - p - 1);
  }
  auto e = line.find_first_of(",}]", p);
  return line.substr(p, e == std::string::npos ? std::string::npos : e - p);
}

long long LogLineTimeMs(const std::string& line) {
  struct tm tm {};
  int ms = 0;
  if (line.size() < 23) return -1;
  const char* rest = strptime(line.c_str(), "%Y-%m-%d %H:%M:%S", &tm);
  if (!rest || *rest != '.' || std::sscanf(rest + 1, "%3d", &ms) != 1) return -1;
  tm.tm_isdst = -1;
  time_t t = mktime(&tm);
  if (t == static_cast<time_t>(-1)) return -1;
  return static_cast<long long>(t) * 1000 + ms;
}

long long NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

int FreeLoopbackPort() {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  int port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
    port = ntohs(a.sin_port);
  }
  close(fd);
  return port;
}

std::string MakeTempDir(const std::string& prefix) {
  std::string tmpl = "/tmp/" + prefix + "-XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back(0);
  if (!mkdtemp(buf.data())) return "";
  return buf.data();
}

}  // namespace romulus::cli
