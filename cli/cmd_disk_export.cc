// romulus disk-export: serves one guest disk over NBD on a local UNIX
// socket for as long as the guest lives, and offers its epoch bookkeeping to
// one replicator at a time over a tap socket (docs/DISK.md §8, §8a). The
// guest's disk is `phy:/dev/nbdN` through the kernel client:
//
//   romulus disk-export --store /dev/vg/guest1-root --name xvda
//       --nbd-socket /run/romulus/guest1-xvda.nbd --tap-socket /run/romulus/guest1-xvda.tap &
//   nbd-client -unix /run/romulus/guest1-xvda.nbd /dev/nbd0 -N xvda
//   echo 1024 > /sys/block/nbd0/queue/max_sectors_kb   # 1 MiB requests
//
// Foreground; one log line with "ready" once both sockets listen; exit 0 on
// SIGTERM/SIGINT, 1 with a message on a fatal error, 2 on a usage error.
#include <signal.h>

#include <spdlog/spdlog.h>

#include "cli/commands.h"
#include "cli/options.h"
#include "common/units.h"
#include "disk/disk_export.h"
#include "disk/exported_disk.h"
#include "disk/io_flusher.h"
#include "disk/tap_wire.h"

namespace romulus::cli {

int RunDiskExport(int argc, char** argv) {
  const char kCmd[] = "disk-export";
  po::options_description desc("Options");
  desc.add_options()
      ("store", po::value<std::string>(), "the guest's disk: a file or block device (size a multiple of 512)")
      ("name", po::value<std::string>(), "NBD export name, [A-Za-z0-9._-]{1,64} (nbd-client -N NAME)")
      ("nbd-socket", po::value<std::string>(), "UNIX socket the kernel NBD client connects to (nbd-client -unix)")
      ("tap-socket", po::value<std::string>(), "UNIX socket the replicator attaches to (replicate --disk-tap)")
      ("budget", po::value<std::string>()->default_value("64M"),
       "write data one epoch may hold while a replicator is attached (more: the replicator resyncs)")
      ("sync-rate", po::value<std::string>()->default_value("64M"),
       "data the streaming copy of a new backup may add to one epoch (at least 1M; holes are free)");
  int code = 0;
  auto vm = ParseOptions(kCmd, "--store PATH --name NAME --nbd-socket SOCK --tap-socket TAPSOCK [--budget SIZE] [--sync-rate SIZE]",
                         desc, argc, argv, &code);
  if (!vm) return code;
  for (const char* flag : {"store", "name", "nbd-socket", "tap-socket"}) {
    if (!vm->count(flag)) {
      UsageError(kCmd, std::string("--") + flag + " is required (see romulus disk-export --help)");
      return kExitUsage;
    }
  }
  disk::DiskExportOptions o;
  o.store_path = (*vm)["store"].as<std::string>();
  o.name = (*vm)["name"].as<std::string>();
  o.nbd_socket = (*vm)["nbd-socket"].as<std::string>();
  o.tap_socket = (*vm)["tap-socket"].as<std::string>();
  if (!disk::tap::IsCleanName(o.name)) {
    UsageError(kCmd, "--name: '" + o.name + "' must be 1.." + std::to_string(disk::tap::kMaxName) +
                         " characters of [A-Za-z0-9._-]");
    return kExitUsage;
  }
  if (!GetSizeAtLeast(kCmd, *vm, "budget", protocol::kMaxDiskWriteChunk, &o.budget_bytes)) return kExitUsage;
  // At least one chunk, or the copy could never take a step.
  if (!GetSizeAtLeast(kCmd, *vm, "sync-rate", o.tap.sync.chunk_bytes, &o.tap.sync.epoch_allowance)) {
    return kExitUsage;
  }

  // SIGTERM/SIGINT are taken by sigwait below; blocked before any thread
  // starts so that every thread inherits the mask.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  // Also before any thread starts: they inherit the mark (disk/io_flusher.h).
  if (Status flusher = disk::MarkIoFlusher(); flusher.ok()) {
    spdlog::info("disk-export '{}': marked as an I/O flusher (PR_SET_IO_FLUSHER)", o.name);
  } else {
    spdlog::warn("disk-export '{}': not marked as an I/O flusher: {}; short of memory, the kernel may make this export "
                 "wait for writeback that only it can complete",
                 o.name, flusher.message());
  }

  auto exp = disk::DiskExport::Open(o);
  if (!exp.ok()) {
    UsageError(kCmd, exp.status().ToString());
    return kExitFailure;
  }
  Status st = (*exp)->Start();
  if (!st.ok()) {
    UsageError(kCmd, st.ToString());
    return kExitFailure;
  }
  spdlog::info(
      "disk-export '{}' ready: nbd-client -unix {} /dev/nbdN -N {}, then echo {} > /sys/block/nbdN/queue/max_sectors_kb "
      "(nbd.ko's default splits writes into 128 KiB requests); replicator tap {} (instance {:016x})",
      o.name, o.nbd_socket, o.name, disk::kNbdMaxRequestKib, o.tap_socket, (*exp)->instance_id());
  int sig = 0;
  sigwait(&set, &sig);
  spdlog::info("disk-export '{}': {}: stopping", o.name, sig == SIGINT ? "SIGINT" : "SIGTERM");
  (*exp)->Stop();
  auto s = (*exp)->stats();
  spdlog::info("disk-export '{}': served {} reads, {} writes ({}), {} flushes; {} replicator attachments, {} seals",
               o.name, s.nbd.reads, s.nbd.writes, FormatSize(s.nbd.bytes_written), s.nbd.flushes, s.tap.attaches,
               s.tap.seals);
  exp->reset();
  return kExitOk;
}

}  // namespace romulus::cli
