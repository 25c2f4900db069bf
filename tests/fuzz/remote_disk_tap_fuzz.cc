// libFuzzer: RemoteDiskTap (disk/remote_disk_tap.h) reading an export's
// answer to SEAL. A scripted export on a UNIX socket sends a valid HELLO (a
// 1 MiB disk) and PAUSED, then the input as its reply to SEAL, and ends its
// side. Invariants: Seal never crashes or hangs (EOF ends every read); a
// failed Seal yields nothing and leaves the tap disconnected unless the
// export answered with one well-formed ERROR; a successful Seal yields only
// records inside the disk, writes with exactly `length` bytes, within the
// budget. An input starting with 'F' is instead the rest of it as the
// export's answer to FLOOR? (its HELLO announces kFeatureFloor): Refresh
// never crashes or hangs, and a tap it left disconnected reports floor 0.
// (Refresh asks once more on a new connection after a failed answer: the
// export closes every further connection unanswered until Refresh returns,
// so none is left waiting for the next input's export.)
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include <spdlog/spdlog.h>

#include "disk/export_socket.h"
#include "disk/remote_disk_tap.h"
#include "disk/tap_wire.h"

using namespace romulus;
using namespace romulus::disk;

namespace {

constexpr uint64_t kDisk = 1 << 20;
constexpr uint64_t kBudget = 256 << 10;

std::vector<uint8_t> Msg(tap::MsgType t, std::span<const uint8_t> body) {
  std::vector<uint8_t> m(tap::kHeaderSize);
  tap::EncodeHeader(std::span<uint8_t, tap::kHeaderSize>(m.data(), tap::kHeaderSize), t,
                    static_cast<uint32_t>(body.size()));
  m.insert(m.end(), body.begin(), body.end());
  return m;
}

void SendAll(int fd, const std::vector<uint8_t>& b) {
  size_t done = 0;
  while (done < b.size()) {
    ssize_t n = ::send(fd, b.data() + done, b.size() - done, MSG_NOSIGNAL);
    if (n <= 0) return;
    done += static_cast<size_t>(n);
  }
}

bool RecvN(int fd, size_t n) {
  std::vector<uint8_t> b(n);
  size_t done = 0;
  while (done < n) {
    ssize_t r = ::recv(fd, b.data() + done, n - done, 0);
    if (r <= 0) return false;
    done += static_cast<size_t>(r);
  }
  return true;
}

struct Env {
  std::string path;
  int listen_fd = -1;
  Env() {
    spdlog::set_level(spdlog::level::off);
    char tmpl[] = "/tmp/romulus-tapfuzz-XXXXXX";
    path = std::string(mkdtemp(tmpl)) + "/t.sock";
    auto fd = ListenUnix(path, "fuzz tap");
    if (!fd.ok()) std::abort();
    listen_fd = *fd;
  }
  ~Env() {
    ::close(listen_fd);
    ::unlink(path.c_str());
    ::rmdir(path.substr(0, path.rfind('/')).c_str());
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Env env;
  const bool floor_mode = size > 0 && data[0] == 'F';
  std::vector<uint8_t> reply(floor_mode ? data + 1 : data, data + size);
  std::atomic<bool> refreshed{false};
  std::thread fake([&] {
    int c = ::accept(env.listen_fd, nullptr, nullptr);
    if (c < 0) std::abort();
    timeval tv{5, 0};
    ::setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    tap::Hello h{42, kDisk, 64 << 20, 1, 0, "xvda"};
    if (floor_mode) h.features = tap::kFeatureChanges | tap::kFeatureFloor;
    uint8_t hb[tap::kHelloFixed + tap::kMaxName];
    SendAll(c, Msg(tap::MsgType::kHello, std::span<const uint8_t>(hb, tap::EncodeHello(h, hb))));
    if (floor_mode) {
      if (RecvN(c, tap::kHeaderSize)) SendAll(c, reply);
    } else if (RecvN(c, tap::kHeaderSize + tap::kPauseSize)) {
      uint8_t p[tap::kPausedChangedSize];
      const size_t pn = tap::EncodePaused(p, tap::Paused{1});
      SendAll(c, Msg(tap::MsgType::kPaused, std::span<const uint8_t>(p, pn)));
      if (RecvN(c, tap::kHeaderSize + tap::kSealSize)) SendAll(c, reply);
    }
    ::shutdown(c, SHUT_WR);
    uint8_t b;
    while (::recv(c, &b, 1, 0) > 0) {
    }
    ::close(c);
    // A second connection (Refresh's retry) gets EOF at once.
    while (floor_mode && !refreshed.load()) {
      pollfd p{env.listen_fd, POLLIN, 0};
      if (::poll(&p, 1, 10) == 1) {
        const int extra = ::accept(env.listen_fd, nullptr, nullptr);
        if (extra >= 0) ::close(extra);
      }
    }
  });
  RemoteDiskTapOptions o;
  o.budget_bytes = kBudget;
  o.transfer_timeout = std::chrono::milliseconds(2000);
  auto tap = RemoteDiskTap::Connect(env.path, o);
  if (!tap.ok()) std::abort();
  if (floor_mode) {
    (*tap)->Refresh();
    if (!(*tap)->connected() && (*tap)->change_floor() != 0) std::abort();
    (*tap)->Disconnect();
    refreshed.store(true);
    fake.join();
    return 0;
  }
  auto tag = (*tap)->Pause(disk::CopyMode::kInPause);
  if (!tag.ok() || *tag != 1) std::abort();
  Status st = (*tap)->Seal(1, std::chrono::steady_clock::now() + std::chrono::seconds(1));
  uint64_t n = 0, bytes = 0;
  (*tap)->ForEachSealed([&](const protocol::DiskRecord& r) {
    ++n;
    if (r.offset > kDisk || r.length > kDisk - r.offset) std::abort();
    if (r.kind == protocol::DiskRecordKind::kWrite) {
      if (r.data.size() != r.length) std::abort();
      bytes += r.length;
    } else if (!r.data.empty()) {
      std::abort();
    }
  });
  if (!st.ok() && n != 0) std::abort();
  // Only the export's own ERROR (a refusal, in step) keeps the connection.
  if (!st.ok() && (*tap)->connected() && st.message().find("the export says") == std::string::npos) std::abort();
  if (bytes > kBudget) std::abort();
  (*tap)->Disconnect();
  fake.join();
  return 0;
}
