// libFuzzer: a whole NBD server session fed arbitrary client bytes (the
// handshake, then requests) over a socketpair, against a 1 MiB in-memory
// disk. Invariants: the server never crashes, hangs or allocates what the
// client asks; every report lies inside the disk, carries no more than
// max_request bytes and the one epoch of the run.
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>

#include "disk/backing_store.h"
#include "disk/epoch_clock.h"
#include "disk/nbd_server.h"

using namespace romulus::disk;

namespace {

constexpr uint64_t kDiskSize = 1u << 20;
constexpr uint32_t kMaxRequest = 64 * 1024;

class CheckingSink final : public DiskWriteSink {
 public:
  void OnWrite(uint64_t epoch, uint64_t offset, std::span<const uint8_t> bytes, bool) override {
    Check(epoch, offset, bytes.size());
    if (bytes.size() > kMaxRequest) std::abort();
  }
  void OnZero(uint64_t epoch, uint64_t offset, uint64_t length, bool, bool) override {
    Check(epoch, offset, length);
  }
  void OnFlush(uint64_t epoch) override { Check(epoch, 0, 0); }
  void OnWriteFailed(uint64_t epoch, uint64_t offset, uint64_t length) override {
    Check(epoch, offset, length);
  }

 private:
  static void Check(uint64_t epoch, uint64_t offset, uint64_t length) {
    if (epoch != 1 || offset > kDiskSize || length > kDiskSize - offset) std::abort();
  }
};

struct World {
  std::unique_ptr<BackingStore> store;
  EpochCounter clock{1};
  CheckingSink sink;
  std::unique_ptr<NbdServer> server;
};

World* Setup() {
  auto* w = new World;
  int fd = ::memfd_create("nbd-fuzz-disk", MFD_CLOEXEC);
  if (fd < 0 || ::ftruncate(fd, kDiskSize) != 0) std::abort();
  BackingStoreOptions so;
  so.direct = DirectIo::kOff;  // memory speed; the O_DIRECT path is unit-tested
  so.max_request = kMaxRequest;
  auto store = BackingStore::Open("/proc/self/fd/" + std::to_string(fd), so);
  if (!store.ok()) std::abort();
  w->store = std::move(*store);  // holds its own descriptor
  ::close(fd);
  NbdServerOptions no;
  no.export_name = "d";
  no.handshake_timeout = std::chrono::seconds(5);
  no.payload_timeout = std::chrono::seconds(5);
  no.reply_timeout = std::chrono::seconds(5);
  auto server = NbdServer::Create(w->store.get(), &w->clock, &w->sink, no);
  if (!server.ok()) std::abort();
  w->server = std::move(*server);
  return w;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static World* world = Setup();
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) std::abort();
  const int client = sv[1];
  // The client writes everything then half-closes; another thread reads
  // every reply so the server never waits on a full socket.
  std::thread writer([&] {
    size_t done = 0;
    while (done < size) {
      ssize_t n = ::send(client, data + done, size - done, MSG_NOSIGNAL);
      if (n <= 0) break;  // the server dropped us: fine
      done += static_cast<size_t>(n);
    }
    ::shutdown(client, SHUT_WR);
  });
  std::thread drainer([&] {
    uint8_t buf[65536];
    while (::recv(client, buf, sizeof buf, 0) > 0) {
    }
  });
  (void)world->server->Serve(sv[0]);  // any status; it must return
  writer.join();
  ::shutdown(client, SHUT_RDWR);
  drainer.join();
  ::close(client);
  if (world->clock.in_flight() != 0) std::abort();
  return 0;
}
