// Helpers for transport tests: temp dirs, key files, a test CA made with the
// openssl CLI, and a loopback client/server pair.
#pragma once

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <string>
#include <thread>

#include "transport/security.h"
#include "transport/tcp.h"

namespace romulus::transport::testing {

using namespace std::chrono_literals;

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "romulus-tr-XXXXXX").string();
    path_ = ::mkdtemp(tmpl.data());
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string File(const std::string& name) const { return path_ + "/" + name; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

inline std::string WriteFile(const std::string& path, const std::string& text, mode_t mode = 0600) {
  { std::ofstream(path) << text; }
  ::chmod(path.c_str(), mode);
  return path;
}

inline std::shared_ptr<SecurityContext> LoadOrDie(const Security& s) {
  auto ctx = SecurityContext::Load(s);
  EXPECT_TRUE(ctx.ok()) << ctx.status().ToString();
  return ctx.ok() ? *ctx : nullptr;
}

inline Security PskConfig(const std::string& file) {
  Security s;
  s.mode = Security::Mode::kPsk;
  s.psk_file = file;
  return s;
}

inline Security Insecure() {
  Security s;
  s.mode = Security::Mode::kInsecure;
  return s;
}

// Creates a CA and a leaf certificate (CN and SAN 127.0.0.1) signed by it,
// in dir, with the openssl command-line tool. Returns false if the tool is
// unavailable or fails.
inline bool MakeCa(const TempDir& dir, const std::string& prefix) {
  std::string d = dir.path() + "/" + prefix;
  std::string cmd =
      "set -e; cd '" + dir.path() + "'; "
      "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 "
      "  -subj '/CN=" + prefix + " test CA' -keyout " + prefix + "-ca.key -out " + prefix + "-ca.pem; "
      "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
      "  -subj '/CN=" + prefix + " node' -keyout " + prefix + "-node.key -out " + prefix + "-node.csr; "
      "printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n' > " + prefix + "-ext.cnf; "
      "openssl x509 -req -in " + prefix + "-node.csr -CA " + prefix + "-ca.pem -CAkey " + prefix +
      "-ca.key -CAcreateserial -days 2 -extfile " + prefix + "-ext.cnf -out " + prefix + "-node.pem; "
      "chmod 600 " + prefix + "-node.key";
  std::string full = "(" + cmd + ") >/dev/null 2>&1";
  return std::system(full.c_str()) == 0;
}

inline Security CertConfig(const TempDir& dir, const std::string& node, const std::string& ca) {
  Security s;
  s.mode = Security::Mode::kCertificate;
  s.cert_file = dir.File(node + "-node.pem");
  s.key_file = dir.File(node + "-node.key");
  s.ca_file = dir.File(ca + "-ca.pem");
  return s;
}

struct Connected {
  Result<std::unique_ptr<Stream>> server = Status::Internal("not run");
  Result<std::unique_ptr<Stream>> client = Status::Internal("not run");
};

// Polls the listener's counters until `done` holds or `timeout` passes;
// returns the last counters seen (the caller asserts on them).
template <typename Pred>
ListenerStats WaitForStats(const Listener& l, Pred done, std::chrono::milliseconds timeout = 10s) {
  Deadline until = DeadlineIn(timeout);
  ListenerStats st = l.stats();
  while (!done(st) && Clock::now() < until) {
    std::this_thread::sleep_for(2ms);
    st = l.stats();
  }
  return st;
}

// Listens on an ephemeral loopback port with `server_sec`, connects with
// `client_sec`, returns both outcomes. The listener handshakes on its own
// thread and never hands out a failed peer, so the server outcome is either
// the accepted stream or the listener's record of why it dropped the peer.
inline Connected ConnectPair(std::shared_ptr<const SecurityContext> server_sec,
                             std::shared_ptr<const SecurityContext> client_sec) {
  Connected c;
  auto listener = Listener::Bind("127.0.0.1", 0, server_sec);
  EXPECT_TRUE(listener.ok()) << listener.status().ToString();
  if (!listener.ok()) return c;
  Listener& l = **listener;
  c.client = Connect("127.0.0.1", l.port(), client_sec, 10s);
  auto st = WaitForStats(l, [](const ListenerStats& s) { return s.authenticated + s.dropped > 0; });
  if (st.authenticated > 0) {
    c.server = l.Accept(DeadlineIn(10s));
  } else if (st.dropped > 0) {
    c.server = st.last_drop;
  } else {
    c.server = Status::Timeout("the listener neither accepted nor dropped the client in 10 s");
  }
  return c;
}

}  // namespace romulus::transport::testing
