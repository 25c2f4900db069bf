// libFuzzer: what a device model's QMP socket says (devicemodel/qmp_client.h),
// as the whole of the peer's side of a connection: greeting, answers,
// events, then EOF. Invariants: the client never crashes, throws or buffers
// past kMaxQmpMessage; every call ends (EOF is always reached: no wait on a
// deadline); once a call failed for anything but a QMP error the
// connection is never used again (Closed), and at most kMaxQmpEvents events
// are kept.
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "devicemodel/device_model.h"
#include "transport/fd_stream.h"

using namespace romulus;
using namespace romulus::devicemodel;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 48 * 1024) return 0;  // fits the socket buffer: written whole before the client reads
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) std::abort();
  int bufsz = 256 * 1024;
  (void)::setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &bufsz, sizeof bufsz);
  for (size_t off = 0; off < size;) {
    ssize_t n = ::write(sv[1], data + off, size - off);
    if (n <= 0) std::abort();
    off += static_cast<size_t>(n);
  }
  ::shutdown(sv[1], SHUT_WR);
  auto stream = transport::OpenFdStream(sv[0], sv[0], "fuzz", true);
  if (!stream.ok()) std::abort();
  auto c = QmpClient::Open(std::move(*stream), "fuzz", transport::DeadlineIn(std::chrono::seconds(5)));
  if (c.ok()) {
    QmpClient& q = **c;
    bool dead = false;
    for (int i = 0; i < 4; ++i) {
      auto r = q.Execute("query-status", nullptr, transport::DeadlineIn(std::chrono::seconds(5)));
      if (dead && (r.ok() || r.status().code() != Code::kClosed)) std::abort();
      if (!r.ok() && r.status().code() != Code::kInvalidArgument && r.status().code() != Code::kUnsupported) {
        dead = true;
      }
    }
    if (q.TakeEvents().size() > kMaxQmpEvents) std::abort();
    // The typed layer over whatever is left: a Status, whatever the answer's shape.
    DeviceModel dm(std::move(*c));
    (void)dm.RunState(transport::DeadlineIn(std::chrono::seconds(5)));
    // What the backup writes into xenstore from query-vnc: bounded, a port.
    auto vnc = dm.QueryVnc(transport::DeadlineIn(std::chrono::seconds(5)));
    if (vnc.ok() && (vnc->host.empty() || vnc->host.size() > 64 || vnc->port == 0 || vnc->port > 65535)) std::abort();
  }
  ::close(sv[1]);
  return 0;
}
