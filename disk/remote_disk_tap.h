// RemoteDiskTap: the DiskTap of a disk whose front end is a long-lived
// `romulus disk-export` process, reached over its tap socket (docs/DISK.md
// §8a). The replicator is the client; the export holds the NBD front end,
// the epoch clock and the log, so the guest's disk outlives a replicator
// that is killed or restarted.
//
// Everything the export sends is checked: headers whole, every RECORDS
// payload with protocol::DiskFrameParser against the disk's size before a
// record of it is kept, the SEALED count/bytes/digest against what arrived,
// and the total accepted per epoch against a budget. The sealed records live
// in two arenas reused from epoch to epoch (entries and data): a steady
// state allocates nothing, and every growth is counted.
//
// A broken connection (EOF, timeout, anything invalid) makes every call fail
// with that status until the next Pause with a copy (any mode but kNone),
// which reconnects (a session's first epoch is a copy anyway). Engine
// thread only, except Acked (any thread: it only records the tag).
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "disk/disk_tap.h"
#include "disk/tap_wire.h"
#include "protocol/disk_records.h"
#include "protocol/messages.h"
#include "transport/stream.h"

namespace romulus::disk {

struct RemoteDiskTapOptions {
  // The id info() announces (the HELLO to the backup names disks by it).
  uint32_t disk_id = 0;
  // Write data one sealed epoch may carry; more is refused (OutOfRange: the
  // session needs a resync). The wire total is bounded by this plus a
  // quarter (at least 4 MiB) for record heads and message headers.
  uint64_t budget_bytes = uint64_t{64} << 20;
  // Connecting and receiving the HELLO.
  std::chrono::milliseconds connect_timeout{10000};
  // A PAUSE's reply; with a full copy (the export reads the whole disk) the longer one.
  std::chrono::milliseconds pause_timeout{10000};
  std::chrono::milliseconds full_copy_timeout{300000};
  // A SEAL's records may arrive this long after Seal's deadline (the export
  // waits for the epoch's requests up to the deadline, then streams).
  std::chrono::milliseconds transfer_timeout{30000};
};

struct RemoteDiskTapStats {
  uint64_t connects = 0;        // successful connections (first included)
  uint64_t export_restarts = 0; // reconnects that found another instance id
  uint64_t seals = 0, records = 0, data_bytes = 0, wire_bytes = 0;
  uint64_t reallocations = 0;   // arena and receive buffer growths (steady state: none)
};

class RemoteDiskTap final : public DiskTap {
 public:
  static Result<std::unique_ptr<RemoteDiskTap>> Connect(const std::string& socket_path,
                                                        RemoteDiskTapOptions options = {});
  ~RemoteDiskTap() override;

  const protocol::DiskInfo& info() const override { return info_; }
  // The export streams its copy (its HELLO's kFeatureStream).
  bool can_stream() const override { return (hello_.features & tap::kFeatureStream) != 0; }
  bool can_compare() const override { return (hello_.features & tap::kFeatureDigests) != 0; }
  // The export's instance id when it tracks changes (HELLO
  // kFeatureChanges), else 0. After a reconnect it names the new instance.
  uint64_t lineage() const override {
    return (hello_.features & tap::kFeatureChanges) != 0 ? hello_.instance_id : 0;
  }
  // Reconnects a broken connection (its HELLO names the export's instance
  // now): a restarted export is known before the session's HELLO, not at
  // its first pause, which would copy the disk whole twice (once for the
  // stale lineage's session, ended at once, once for the next). Then asks
  // the export its change floor (FLOOR?, where it answers: change_floor).
  void Refresh() override;
  // Sent as ACKED before the next PAUSE (never from this call: the tap's
  // connection is used by the engine's own sequence of calls only).
  void Acked(uint64_t tag) override;
  // The later of the export's own floor (FLOOR?, asked by Refresh where the
  // export has kFeatureFloor: it counts the acks of replicators before this
  // one) and the latest ack of this export instance passed to Acked (the
  // export forgets through it: ACKED goes out before the next PAUSE, the
  // session's first included). An older export answers nothing, so a floor
  // it reached for an earlier replicator is not known: a whole copy,
  // uncompared. One above the export's own (it ignores an ACKED of a tag
  // it never paused) costs a needless description. Never a wrong delta.
  uint64_t change_floor() const override {
    return std::max(export_floor_.load(std::memory_order_relaxed), ack_pending_.load(std::memory_order_relaxed));
  }
  uint64_t copied_regions() const override { return copied_regions_; }
  Result<uint64_t> Pause(CopyMode copy, uint64_t since = 0, uint64_t lineage = 0,
                         std::shared_ptr<const protocol::DiskChunkTable> backup = nullptr) override;
  Status Seal(uint64_t tag, std::chrono::steady_clock::time_point deadline) override;
  void ForEachSealed(const std::function<void(const protocol::DiskRecord&)>& fn) const override;
  uint32_t sealed_sync_state() const override { return sealed_sync_state_; }

  // The export's HELLO on the current connection.
  const tap::Hello& hello() const { return hello_; }
  bool connected() const { return stream_ != nullptr && broken_.ok(); }
  const RemoteDiskTapStats& stats() const { return stats_; }
  // Drops the connection (the export then stops logging). Tests, shutdown.
  void Disconnect();

 private:
  RemoteDiskTap(std::string path, RemoteDiskTapOptions options);
  Status Open();
  // FLOOR? to an export that answers it (kFeatureFloor): its change floor.
  Status QueryFloor();
  // Reads one message; its payload lands in rx_ (valid until the next read).
  Result<tap::Header> ReadMessage(transport::Deadline deadline);
  Status Send(tap::MsgType type, std::span<const uint8_t> payload, transport::Deadline deadline);
  // Marks the connection broken with `st` (returned).
  Status Break(Status st);
  // An ERROR from the export as a Status (the connection stays usable).
  Status RemoteError(std::span<const uint8_t> payload);
  Status Receive(uint64_t tag, transport::Deadline deadline);

  const std::string path_;
  const RemoteDiskTapOptions options_;
  protocol::DiskInfo info_;
  tap::Hello hello_;
  std::unique_ptr<transport::Stream> stream_;
  Status broken_;  // non-Ok once the connection cannot be trusted

  std::vector<uint8_t> rx_;  // one message's payload, grown to the largest seen
  protocol::DiskFrameParser parser_;
  protocol::DiskRecordDigest digest_;
  struct Entry {
    protocol::DiskRecordKind kind;
    uint8_t flags;
    uint64_t offset;
    uint64_t length;
    size_t data_at;
  };
  std::vector<Entry> sealed_;
  std::vector<uint8_t> sealed_data_;
  RemoteDiskTapStats stats_;
  // ACKED: the latest tag the backup committed, and the latest sent.
  std::atomic<uint64_t> ack_pending_{0};
  std::atomic<uint64_t> export_floor_{0};  // FLOOR's answer on this connection
  uint64_t ack_sent_ = 0;
  uint64_t copied_regions_ = 0;
  uint32_t sealed_sync_state_ = protocol::kSyncWhole;
  bool streaming_ = false;  // this attachment's copy was started with PAUSE mode 2
};

}  // namespace romulus::disk
