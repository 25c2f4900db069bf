// An activated guest's disk image served by a `romulus disk-export` through
// the kernel NBD client (docs/DISK.md §8b): what the backup gives blkback
// instead of a loop device when the guest is to be replicated again
// (restore --reverse-to), so its writes pass the export's epoch log and a
// replicator can attach to the export's tap.
//
//   image ─ romulus disk-export (own session, outlives this process)
//             ├─ IMAGE.nbd ◀─ nbd-client -unix … /dev/nbdK ◀─ blkback ◀─ guest
//             └─ IMAGE.tap ◀─ the reverse replicator (RemoteDiskTap)
//
// Lifetime: until Served() the object owns both (destroyed, it disconnects
// the NBD device and stops the export: nothing is left behind by a failed
// activation). Once blkback holds the device the guest depends on it, so
// from Served() on they outlive this object and this process; they are
// stopped as any disk export is, by the operator (nbd-client -d, SIGTERM).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "disk/block_device.h"
#include "protocol/disk_records.h"

namespace romulus::disk {

// What a connected /dev/nbdK should let the kernel send in one request:
// 1 MiB, one DISK record's largest chunk (protocol::kMaxDiskWriteChunk).
inline constexpr uint32_t kNbdMaxRequestKib = protocol::kMaxDiskWriteChunk / 1024;

struct ExportedDiskOptions {
  std::string romulus;                  // the romulus binary that runs `disk-export`
  std::string nbd_client = "nbd-client";  // Debian's nbd-client (PATH lookup without '/')
  std::string sysfs_block = "/sys/block";  // where nbd<K> devices are listed
  std::string dev_dir = "/dev";
  std::chrono::milliseconds ready_wait{10000};  // the export's "ready" line
  // Each nbd-client run (connect, disconnect): killed after this, so a hung
  // handshake cannot keep the paused guest waiting for ever.
  std::chrono::milliseconds client_timeout{15000};
  // The largest request the kernel client may send (RaiseNbdMaxRequest);
  // 0 leaves nbd.ko's 128 KiB.
  uint32_t max_request_kib = kNbdMaxRequestKib;
};

class ExportedDisk final : public BlockDevice {
 public:
  // Starts the export of `image` (export name `vdev`, sockets IMAGE.nbd and
  // IMAGE.tap, log IMAGE.export.log) and connects the first free /dev/nbdK
  // to it. InvalidArgument for a socket path that is too long or already
  // served by a live process (an export of the same image on other socket
  // paths is not detected); IoError for no free NBD device (before anything
  // starts), an export that did not get ready (naming its log), or an
  // nbd-client that failed or hung on every device tried.
  static Result<std::unique_ptr<ExportedDisk>> Start(const std::string& image, const std::string& vdev,
                                                     const ExportedDiskOptions& options);
  ~ExportedDisk() override;
  ExportedDisk(const ExportedDisk&) = delete;
  ExportedDisk& operator=(const ExportedDisk&) = delete;

  const std::string& path() const override { return device_; }  // "/dev/nbd1"
  uint32_t dev_major() const override { return major_; }
  uint32_t dev_minor() const override { return minor_; }
  Result<uint64_t> Sectors() const override;
  void Served() override { served_ = true; }

  const std::string& tap_socket() const { return tap_socket_; }
  const std::string& nbd_socket() const { return nbd_socket_; }
  const std::string& log() const { return log_; }
  pid_t export_pid() const { return export_pid_; }

 private:
  ExportedDisk() = default;
  void TearDown();

  ExportedDiskOptions options_;
  std::string device_, nbd_socket_, tap_socket_, log_, client_log_;
  pid_t export_pid_ = -1;
  int fd_ = -1;  // the NBD device, open from the connect on (its size, BLKGETSIZE64)
  bool connected_ = false, served_ = false;
  uint32_t major_ = 0, minor_ = 0;
};

// The pid in sysfs_block/nbdK/pid (the client that configured the device),
// -1 when the device is not connected or the attribute is unreadable.
pid_t NbdClientPid(const std::string& sysfs_block, int k);

// The numbers K of sysfs_block/nbdK that no client holds (no `pid`
// attribute), in increasing order.
std::vector<int> FreeNbdDevices(const std::string& sysfs_block);

// Raises the largest request the kernel's NBD client sends to /dev/nbdK
// (sysfs_block/nbdK/queue/max_sectors_kb) to `kib`, capped by the device's
// max_hw_sectors_kb; never lowers it. Why: nbd.ko creates every device with
// 128 KiB, so a 1 MiB write reaches the export as 8 requests, each a round
// trip through the socket and the export, served one after the other; in the
// Xen lab's dom0 1 MiB requests carried 1.4-2.2x the sequential throughput
// (docs/benchmarks.md). Returns the value in force afterwards. IoError when
// an attribute is missing or unreadable, or the kernel kept another value.
Result<uint32_t> RaiseNbdMaxRequest(const std::string& sysfs_block, int k, uint32_t kib);

}  // namespace romulus::disk
