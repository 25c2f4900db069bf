// Shared by tests/disk: a recording DiskWriteSink, temporary files, and a
// raw NBD client built from hand-written bytes (independent of
// disk/nbd_wire, so the server is not tested against its own encoder).
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "disk/write_sink.h"

namespace romulus::disk::testing {

struct SinkEvent {
  enum Kind { kWrite, kZero, kFlush, kFailed } kind;
  uint64_t epoch = 0;
  uint64_t offset = 0;
  uint64_t length = 0;
  bool trim = false;
  bool fua = false;
  std::vector<uint8_t> data;
};

class RecordingSink final : public DiskWriteSink {
 public:
  // Called (outside the lock) at the start of every OnWrite: a test can hold
  // the server there.
  std::function<void(const SinkEvent&)> on_write_hook;

  void OnWrite(uint64_t epoch, uint64_t offset, std::span<const uint8_t> bytes, bool fua) override {
    SinkEvent e{SinkEvent::kWrite, epoch, offset, bytes.size(), false, fua,
                std::vector<uint8_t>(bytes.begin(), bytes.end())};
    if (on_write_hook) on_write_hook(e);
    Add(std::move(e));
  }
  void OnZero(uint64_t epoch, uint64_t offset, uint64_t length, bool trim, bool fua) override {
    Add(SinkEvent{SinkEvent::kZero, epoch, offset, length, trim, fua, {}});
  }
  void OnFlush(uint64_t epoch) override { Add(SinkEvent{SinkEvent::kFlush, epoch, 0, 0, false, false, {}}); }
  void OnWriteFailed(uint64_t epoch, uint64_t offset, uint64_t length) override {
    Add(SinkEvent{SinkEvent::kFailed, epoch, offset, length, false, false, {}});
  }
  std::vector<SinkEvent> events() const {
    std::lock_guard<std::mutex> lock(mu_);
    return events_;
  }

 private:
  void Add(SinkEvent e) {
    std::lock_guard<std::mutex> lock(mu_);
    events_.push_back(std::move(e));
  }
  mutable std::mutex mu_;
  std::vector<SinkEvent> events_;
};

// A one-shot gate between two threads: no sleeps.
class Latch {
 public:
  void Open() {
    std::lock_guard<std::mutex> lock(mu_);
    open_ = true;
    cv_.notify_all();
  }
  void Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return open_; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false;
};

// A temporary directory removed (with its files) at destruction.
class TempDir {
 public:
  TempDir() {
    const char* base = getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/romulus-disk-XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back(0);
    EXPECT_NE(mkdtemp(buf.data()), nullptr);
    path_ = buf.data();
  }
  ~TempDir() { (void)!system(("rm -rf '" + path_ + "'").c_str()); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

inline std::vector<uint8_t> Pattern(size_t n, uint32_t seed) {
  std::vector<uint8_t> v(n);
  uint32_t x = seed * 2654435761u + 1;
  for (size_t i = 0; i < n; ++i) {
    x = x * 1103515245u + 12345u;
    v[i] = static_cast<uint8_t>(x >> 16);
  }
  return v;
}

inline void WriteFile(const std::string& path, const std::vector<uint8_t>& bytes) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::write(fd, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
  ::close(fd);
}

inline std::vector<uint8_t> ReadFile(const std::string& path) {
  std::vector<uint8_t> out;
  int fd = ::open(path.c_str(), O_RDONLY);
  EXPECT_GE(fd, 0);
  uint8_t buf[65536];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) break;
    out.insert(out.end(), buf, buf + n);
  }
  ::close(fd);
  return out;
}

// ---- raw bytes, big-endian, written by hand ----
inline void PutBE(std::vector<uint8_t>* v, uint64_t x, int bytes) {
  for (int i = bytes - 1; i >= 0; --i) v->push_back(static_cast<uint8_t>(x >> (8 * i)));
}
inline uint64_t GetBE(const uint8_t* p, int bytes) {
  uint64_t x = 0;
  for (int i = 0; i < bytes; ++i) x = (x << 8) | p[i];
  return x;
}

// The client end of a socketpair, with a receive timeout so that a test
// whose server misbehaves fails instead of hanging.
class RawClient {
 public:
  explicit RawClient(int fd) : fd_(fd) {
    timeval tv{20, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  ~RawClient() { Close(); }
  void Close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  int fd() const { return fd_; }

  bool Send(const std::vector<uint8_t>& bytes) {
    size_t done = 0;
    while (done < bytes.size()) {
      ssize_t n = ::send(fd_, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
      if (n <= 0) return false;
      done += static_cast<size_t>(n);
    }
    return true;
  }
  // Exactly n bytes, or fewer if the server closed (or the timeout hit).
  std::vector<uint8_t> Recv(size_t n) {
    std::vector<uint8_t> out(n);
    size_t done = 0;
    while (done < n) {
      ssize_t r = ::recv(fd_, out.data() + done, n - done, 0);
      if (r <= 0) break;
      done += static_cast<size_t>(r);
    }
    out.resize(done);
    return out;
  }
  // True when the server has closed its end: EOF, or a reset when it closed
  // with bytes of ours still unread (AF_UNIX reports that as ECONNRESET).
  // False when a byte arrives or nothing does before the receive timeout.
  bool AtEof() {
    uint8_t b;
    ssize_t r = ::recv(fd_, &b, 1, 0);
    return r == 0 || (r < 0 && errno == ECONNRESET);
  }

  // Greeting (18 bytes) checked, then the client flags.
  void Greet(uint32_t client_flags) {
    auto g = Recv(18);
    ASSERT_EQ(g.size(), 18u);
    ASSERT_EQ(GetBE(g.data(), 8), 0x4e42444d41474943ull);
    ASSERT_EQ(GetBE(g.data() + 8, 8), 0x49484156454F5054ull);
    ASSERT_EQ(GetBE(g.data() + 16, 2), 3u);  // FIXED_NEWSTYLE | NO_ZEROES
    std::vector<uint8_t> f;
    PutBE(&f, client_flags, 4);
    ASSERT_TRUE(Send(f));
  }
  void SendOption(uint32_t option, const std::vector<uint8_t>& data) {
    std::vector<uint8_t> o;
    PutBE(&o, 0x49484156454F5054ull, 8);
    PutBE(&o, option, 4);
    PutBE(&o, data.size(), 4);
    o.insert(o.end(), data.begin(), data.end());
    ASSERT_TRUE(Send(o));
  }
  struct OptReply {
    uint32_t option = 0, type = 0;
    std::vector<uint8_t> data;
    bool ok = false;
  };
  OptReply RecvOptionReply() {
    OptReply r;
    auto h = Recv(20);
    if (h.size() != 20 || GetBE(h.data(), 8) != 0x0003e889045565a9ull) return r;
    r.option = static_cast<uint32_t>(GetBE(h.data() + 8, 4));
    r.type = static_cast<uint32_t>(GetBE(h.data() + 12, 4));
    r.data = Recv(static_cast<size_t>(GetBE(h.data() + 16, 4)));
    r.ok = true;
    return r;
  }
  // NBD_OPT_EXPORT_NAME with NO_ZEROES agreed: size and flags back.
  void ExportName(const std::string& name, uint64_t* size, uint16_t* flags) {
    SendOption(1, std::vector<uint8_t>(name.begin(), name.end()));
    auto r = Recv(10);
    ASSERT_EQ(r.size(), 10u);
    *size = GetBE(r.data(), 8);
    *flags = static_cast<uint16_t>(GetBE(r.data() + 8, 2));
  }
  void SendRequest(uint16_t flags, uint16_t type, uint64_t cookie, uint64_t offset, uint32_t length,
                   const std::vector<uint8_t>& payload = {}) {
    std::vector<uint8_t> q;
    PutBE(&q, 0x25609513, 4);
    PutBE(&q, flags, 2);
    PutBE(&q, type, 2);
    PutBE(&q, cookie, 8);
    PutBE(&q, offset, 8);
    PutBE(&q, length, 4);
    q.insert(q.end(), payload.begin(), payload.end());
    ASSERT_TRUE(Send(q));
  }
  // A simple reply: error, or UINT32_MAX if none arrived; cookie checked.
  uint32_t RecvReply(uint64_t cookie) {
    auto r = Recv(16);
    if (r.size() != 16 || GetBE(r.data(), 4) != 0x67446698) return UINT32_MAX;
    EXPECT_EQ(GetBE(r.data() + 8, 8), cookie);
    return static_cast<uint32_t>(GetBE(r.data() + 4, 4));
  }

 private:
  int fd_;
};

}  // namespace romulus::disk::testing
