// The NBD export's per-request cost: NbdServer serving WRITE requests over a
// UNIX socketpair, as `romulus disk-export` serves the kernel's nbd.ko.
//
// The client sends each WRITE's payload the way Linux's NBD client does: one
// sendmsg per bio segment (a 4 KiB page for O_DIRECT from user memory), so a
// 1 MiB write reaches the server as 256 socket buffers. What this measures is
// the server's side of that: how many times it wakes and enters the kernel per
// request. The store is a file in TMPDIR (page cache, no O_DIRECT), so the
// figure is the NBD path alone, not a disk. Figures, not pass criteria.
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "disk/backing_store.h"
#include "disk/epoch_clock.h"
#include "disk/nbd_server.h"
#include "disk/nbd_wire.h"
#include "disk/write_sink.h"

namespace romulus::disk {
namespace {

constexpr uint64_t kDiskSize = 64ull << 20;
constexpr size_t kSegment = 4096;  // one bio_vec of a user buffer

class NullSink final : public DiskWriteSink {
 public:
  void OnWrite(uint64_t, uint64_t, std::span<const uint8_t>, bool) override {}
  void OnZero(uint64_t, uint64_t, uint64_t, bool, bool) override {}
  void OnFlush(uint64_t) override {}
  void OnWriteFailed(uint64_t, uint64_t, uint64_t) override {}
};

bool SendAll(int fd, const uint8_t* p, size_t n) {
  while (n > 0) {
    ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
    if (w <= 0) return false;
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

bool RecvAll(int fd, uint8_t* p, size_t n) {
  while (n > 0) {
    ssize_t r = ::recv(fd, p, n, 0);
    if (r <= 0) return false;
    p += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}

// One export and one connected client, handshake done (EXPORT_NAME).
class World {
 public:
  World() {
    const char* tmp = std::getenv("TMPDIR");
    std::string dir = tmp && *tmp ? tmp : "/tmp";
    path_ = dir + "/nbd_server_bench." + std::to_string(::getpid()) + ".img";
    int fd = ::open(path_.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || ::ftruncate(fd, kDiskSize) != 0) std::abort();
    ::close(fd);
    BackingStoreOptions so;
    so.direct = DirectIo::kOff;
    so.max_request = 4u << 20;
    store_ = std::move(*BackingStore::Open(path_, so));
    NbdServerOptions no;
    no.export_name = "bench";
    server_ = std::move(*NbdServer::Create(store_.get(), &clock_, &sink_, no));
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) std::abort();
    client_ = sv[1];
    thread_ = std::thread([this, fd = sv[0]] { (void)server_->Serve(fd); });
    Handshake();
  }
  ~World() {
    server_->Stop();
    thread_.join();
    ::close(client_);
    ::unlink(path_.c_str());
  }

  // One WRITE of `length` bytes at `offset`, payload in 4 KiB sends; waits
  // for the reply. False if the server failed it.
  bool Write(uint64_t offset, const uint8_t* data, uint32_t length) {
    uint8_t hdr[nbd::kRequestSize];
    nbd::Request r{};
    r.type = nbd::kCmdWrite;
    r.cookie = ++cookie_;
    r.offset = offset;
    r.length = length;
    nbd::EncodeRequest(hdr, r);
    if (!SendAll(client_, hdr, sizeof hdr)) return false;
    for (size_t done = 0; done < length; done += kSegment) {
      if (!SendAll(client_, data + done, std::min<size_t>(kSegment, length - done))) return false;
    }
    uint8_t reply[nbd::kSimpleReplySize];
    if (!RecvAll(client_, reply, sizeof reply)) return false;
    return nbd::LoadBE32(reply + 4) == 0 && nbd::LoadBE64(reply + 8) == cookie_;
  }

 private:
  void Handshake() {
    uint8_t greeting[nbd::kGreetingSize];
    if (!RecvAll(client_, greeting, sizeof greeting)) std::abort();
    uint8_t cflags[4];
    nbd::StoreBE32(cflags, 1 | 2);  // FIXED_NEWSTYLE | NO_ZEROES
    if (!SendAll(client_, cflags, sizeof cflags)) std::abort();
    const std::string name = "bench";
    std::vector<uint8_t> opt(16 + name.size());
    nbd::StoreBE64(opt.data(), 0x49484156454F5054ull);  // IHAVEOPT
    nbd::StoreBE32(opt.data() + 8, 1);                  // NBD_OPT_EXPORT_NAME
    nbd::StoreBE32(opt.data() + 12, static_cast<uint32_t>(name.size()));
    std::memcpy(opt.data() + 16, name.data(), name.size());
    if (!SendAll(client_, opt.data(), opt.size())) std::abort();
    uint8_t reply[nbd::kExportNameReplySize];
    if (!RecvAll(client_, reply, sizeof reply)) std::abort();
  }

  std::string path_;
  std::unique_ptr<BackingStore> store_;
  EpochCounter clock_{1};
  NullSink sink_;
  std::unique_ptr<NbdServer> server_;
  std::thread thread_;
  int client_ = -1;
  uint64_t cookie_ = 0;
};

void BM_NbdWrite(benchmark::State& state) {
  const uint32_t length = static_cast<uint32_t>(state.range(0));
  World world;
  std::vector<uint8_t> data(length);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i * 131 + 7);
  uint64_t offset = 0;
  for (auto _ : state) {
    if (!world.Write(offset, data.data(), length)) {
      state.SkipWithError("the server failed a WRITE");
      break;
    }
    offset = (offset + length) % kDiskSize;
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * length);
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_NbdWrite)->Arg(4096)->Arg(64 << 10)->Arg(1 << 20)->UseRealTime();

}  // namespace
}  // namespace romulus::disk
