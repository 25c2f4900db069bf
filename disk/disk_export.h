// DiskExport: everything `romulus disk-export` runs (docs/DISK.md §8,
// §8a): one guest disk served over NBD on a local UNIX socket — the kernel
// client's `nbd-client -unix NBD_SOCKET /dev/nbd0 -N NAME` — for as long as
// the guest lives, and its epoch bookkeeping offered to one replicator at a
// time over a second UNIX socket (the tap, disk/tap_server.h).
//
//   Open()   validates everything (store, name, both socket paths) and
//            binds both sockets (mode 0600; a stale file from a dead export
//            is replaced, a live one refused)
//   Start()  one thread accepts on both sockets; each connection is served
//            on a thread of its own (the NBD server refuses a second
//            concurrent client, the tap a second replicator)
//   Stop()   from any thread (a signal handler's thread): stops serving,
//            joins every thread, removes both socket files
#pragma once

#include <atomic>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "common/status.h"
#include "common/thread_annotations.h"
#include "disk/backing_store.h"
#include "disk/epoch_clock.h"
#include "disk/epoch_disk_log.h"
#include "disk/nbd_server.h"
#include "disk/tap_server.h"

namespace romulus::disk {

struct DiskExportOptions {
  std::string store_path;   // a file or block device, a multiple of 512 bytes
  std::string name;         // the NBD export's name: [A-Za-z0-9._-]{1,64}
  std::string nbd_socket;
  std::string tap_socket;
  uint64_t budget_bytes = uint64_t{64} << 20;  // the log's bound of one epoch's write data
  BackingStoreOptions store;
  NbdServerOptions nbd;     // export_name is set from `name`
  TapServerOptions tap;
};

struct DiskExportStats {
  NbdServerStats nbd;
  TapServerStats tap;
  EpochDiskLogStats log;
  uint64_t nbd_connections = 0, tap_connections = 0, refused_connections = 0;
};

class DiskExport {
 public:
  static Result<std::unique_ptr<DiskExport>> Open(DiskExportOptions options);
  ~DiskExport();  // Stop()

  Status Start();
  void Stop();

  uint64_t instance_id() const { return instance_id_; }
  uint64_t disk_size() const { return store_->size(); }
  const std::string& io_mode() const { return store_->io_mode(); }
  DiskExportStats stats() const;
  TapServer* tap() { return tap_.get(); }
  EpochCounter* clock() { return &clock_; }

 private:
  explicit DiskExport(DiskExportOptions options);
  void AcceptLoop();
  // Runs fn(fd) on a thread of its own, tracked until it ends.
  void Spawn(int fd, bool nbd);
  void Reap(bool all);

  const DiskExportOptions options_;
  uint64_t instance_id_ = 0;
  std::unique_ptr<BackingStore> store_;       // the NBD front end's
  std::unique_ptr<BackingStore> copy_store_;  // the full copy's (read-only)
  EpochCounter clock_{1};
  std::unique_ptr<EpochDiskLog> log_;
  std::unique_ptr<LoggingGate> gate_;
  std::unique_ptr<NbdServer> nbd_;
  std::unique_ptr<TapServer> tap_;
  int nbd_listen_ = -1, tap_listen_ = -1;
  int wake_fd_ = -1;  // eventfd: Stop wakes the accept loop
  std::thread accept_thread_;
  std::atomic<bool> stopping_{false};

  struct Conn {
    std::thread thread;
    std::atomic<bool> done{false};
  };
  mutable std::mutex mu_;
  std::list<std::unique_ptr<Conn>> conns_ GUARDED_BY(mu_);
  uint64_t nbd_connections_ GUARDED_BY(mu_) = 0;
  uint64_t tap_connections_ GUARDED_BY(mu_) = 0;
  uint64_t refused_connections_ GUARDED_BY(mu_) = 0;
};

}  // namespace romulus::disk
