// CheckpointSender: the primary's end of one connection to a backup.
//
// It owns the stream after the handshake, encodes each epoch's pages through
// the page cache into the preallocated OutBuffer as PAGES frames, passes
// state records through as STATE frames, closes each epoch with an EPOCH_END
// frame (counts + memory digest), sends heartbeats, and collects the
// backup's acks on a reader thread. Both the timer-driven EpochLoop (simulated
// guest) and the Xen backend (libxenguest callbacks) drive it:
//
//   BeginEpoch(N); [ResizeCache(...)]; AddPage(...)*; AddState(...)*; EndEpoch(); ... WaitAck(N)
//
// Pages passed to AddPage must be snapshot bytes that stay unchanged for the
// call (never live guest memory): the cache is updated from the same bytes.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "compress/page_codec.h"
#include "protocol/disk_records.h"
#include "protocol/disk_digests.h"
#include "protocol/messages.h"

namespace romulus::transport {
class Stream;
}

namespace romulus::replicator {

struct SenderOptions {
  compress::CodecOptions codec;
  size_t outbuf_bytes = 16u << 20;
  size_t max_batch_bytes = 1u << 20;  // payload of one PAGES frame
  std::chrono::milliseconds heartbeat_interval{100};
  // No frame at all from the backup for this long: it is gone. This is the
  // primary's only judge of the backup's life (docs/PROTOCOL.md §6).
  std::chrono::milliseconds peer_timeout{1000};
  // A write that makes no progress at all (not one frame accepted) for this
  // long although the backup still heartbeats: its receive loop is stuck.
  // A write that progresses, however slowly, waits: that is backpressure.
  std::chrono::milliseconds write_timeout{10000};
  // The same during the session's first epoch, the whole guest; 0: none.
  // A backup applies the full sync as it streams (a disk-bound image,
  // libxenguest) and may stop reading for long stretches (writeback, a
  // loaded host): by default only its silence (peer_timeout) ends the wait.
  std::chrono::milliseconds first_epoch_write_timeout{0};
  // A session given up (ack timeout, silence, a stuck write, a resync) is
  // not just closed: the backup is sent ERROR kResync, our side half-closes
  // and keeps reading until the backup's EOF, at most this long, so that a
  // backup that was only stalled reads "resync" rather than a reset it would
  // take for our death. Must be at least the backup's --failover-timeout.
  std::chrono::milliseconds drain_timeout{30000};
  // Offer kCapHeldPages (docs/PROTOCOL.md §3.9): a backup that can describe
  // its image sends its page hashes, and the session's first epoch carries
  // only the pages that differ. Off: every page is sent (as before HELD).
  bool use_held_pages = true;
};

struct GuestInfo {
  uint64_t guest_pages = 0;
  std::string identity;
  uint64_t first_epoch = 1;    // number of the session's first epoch (>= 1)
  uint64_t capabilities = 0;   // protocol::kCap* bits the session uses (e.g. kCapXenStream)
  uint8_t resync_reason = 0;   // protocol::ResyncReason
  // The guest's disks (docs/PROTOCOL.md §3.10). Non-empty: the HELLO lists
  // them and offers AND requires kCapDisk, so a backup that cannot keep the
  // disks refuses the session (Start fails: Unsupported) instead of
  // replicating memory alone.
  std::vector<protocol::DiskInfo> disks;
  // Offer kCapDiskSync (docs/DISK.md §7.1): every disk can stream its copy.
  bool offer_disk_sync = false;
  // Offer kCapDiskDigests (docs/DISK.md §7.4): every disk can leave out
  // the chunks its backup holds already.
  bool offer_disk_digests = false;
  // Offer kCapDiskDelta (docs/DISK.md §7.2) with these lineages, one per
  // disk (empty: not offered).
  std::vector<uint64_t> disk_lineages;
  // With disk_lineages: offer kCapDiskFloor with these floors, one per disk
  // (empty: not offered), so a backup holding a disk as of an older tag
  // describes it (docs/DISK.md §7.4). Left out when the HELLO would not fit.
  std::vector<uint64_t> disk_change_floors;
  // Offer kCapXenRelease with this release (0: not offered).
  uint32_t xen_release = 0;
};

// What one epoch cost on the wire; filled by EndEpoch.
struct EpochWireStats {
  uint64_t epoch = 0;
  uint64_t pages = 0;
  uint64_t pages_kept = 0;  // first epoch with HELD: pages the backup held already, not sent
  uint64_t state_records = 0;
  uint64_t raw_bytes = 0;   // pages * 4096 + state bytes
  uint64_t wire_bytes = 0;  // every frame byte of the epoch, headers included
  std::array<uint64_t, compress::kNumPageKinds> pages_by_kind{};
  uint64_t cache_hits = 0, cache_misses = 0, cache_overflows = 0;
  std::chrono::microseconds encode_time{0};  // CPU spent encoding pages
  // The disk part (AddDiskFrame/AddDiskEnd): records and uncompressed data
  // bytes (from the DISK_ENDs), and the wire bytes of DISK + DISK_END frames
  // (headers included; also counted in wire_bytes).
  uint64_t disk_records = 0;
  uint64_t disk_bytes = 0;
  uint64_t disk_wire_bytes = 0;
  uint64_t digest = 0;
  size_t outbuf_high_water = 0;
};

class CheckpointSender {
 public:
  // Performs the handshake on `stream` (HELLO / HELLO_ACK) and starts the
  // heartbeat and ack-reader threads. Fails with a clear Status if the backup
  // refuses (version, cache size, guest size) or does not answer in time.
  // A refusal because of one of the backup's bounds (its --max-cache-size,
  // --max-guest-size) is OutOfRange; other refusals are Unsupported.
  static Result<std::unique_ptr<CheckpointSender>> Start(std::unique_ptr<transport::Stream> stream,
                                                         const SenderOptions& opts,
                                                         const GuestInfo& guest);
  // The same, connecting only once the session's page cache, digest and
  // outbuf are allocated: the backup gives a connection a bounded time (its
  // pre-authentication deadline) to present its HELLO, which the
  // allocations of a large guest must not eat into.
  using Connector = std::function<Result<std::unique_ptr<transport::Stream>>()>;
  static Result<std::unique_ptr<CheckpointSender>> Start(const Connector& connect, const SenderOptions& opts,
                                                         const GuestInfo& guest);
  ~CheckpointSender();

  Status BeginEpoch(uint64_t epoch);
  // Live cache resize (docs/PROTOCOL.md §3.8): right after BeginEpoch, before
  // any page or state of the epoch, sends CACHE_RESIZE(cache_pages) and
  // moves the cache's state into `fresh` (PageCache::ResizeInto), exactly as
  // the backup will on receiving it. `fresh` must come from
  // PageCache::Create(cache_pages, guest_pages), so that the allocation was
  // done (and could fail) before anything was sent. Unsupported if the
  // backup did not agree to kCapCacheResize, OutOfRange above its limit;
  // nothing is sent or changed then.
  Status ResizeCache(uint64_t cache_pages, std::unique_ptr<compress::PageCache> fresh);
  // What the handshake agreed (fixed for the session, any thread).
  bool can_resize_cache() const;
  // The backup agreed kCapDiskSync: the disks' copy may be streamed.
  bool disk_sync_agreed() const;
  // kCapDiskDelta agreed: DISK_END carries tags, and the backup named what
  // its committed disks hold (as of which tag of which lineage).
  bool disk_delta_agreed() const;
  const std::vector<protocol::DiskHeld>& backup_disks_held() const;
  // kCapDiskDigests agreed: what the backup's copy of each disk holds, in
  // HELLO order (null: not described); empty when not agreed. Taken once,
  // by the session's first copy (the tables are 16 MiB per TiB of disk:
  // not kept for the session); later calls get none. Checkpoint thread.
  std::vector<std::shared_ptr<const protocol::DiskChunkTable>> TakeBackupDiskDigests();
  uint64_t backup_max_cache_pages() const;  // HelloAck::kNoCacheLimit: unbounded
  // The backup sent its HELD table (§3.9): the first epoch sends only what differs.
  bool backup_sent_held() const;
  uint64_t backup_held_pages() const;  // non-zero pages in that table
  // Pages of the epoch in progress not sent because the backup held them.
  uint64_t epoch_pages_kept() const;
  // For a page the caller knows to be all zero without reading it (never
  // written): true, and counted as kept, when the backup holds a zero page
  // there in this epoch (its HELD table); false: AddPage it as usual.
  bool SkipKnownZeroPage(uint64_t pfn);
  Status AddPage(uint64_t pfn, const uint8_t* page);
  Status AddState(std::span<const uint8_t> record);
  // The disk part of the epoch (§3.10), only in a session with disks:
  // one DISK payload (protocol::DiskFrameBuilder's), and one DISK_END per
  // disk after its last DISK frame, before EndEpoch. InvalidArgument
  // without disks in the session.
  Status AddDiskFrame(std::span<const uint8_t> payload);
  Status AddDiskEnd(const protocol::DiskEnd& end);
  // Flushes everything and sends EPOCH_END. Returns the epoch's wire stats.
  Result<EpochWireStats> EndEpoch();

  // Blocks until the backup acked `epoch` (or a later one). kTimeout after
  // `timeout`, kClosed / kCorruption if the connection failed meanwhile.
  // kWhileAlive: no timeout, as long as the backup is alive (heartbeats
  // within peer_timeout) -- for the full sync, whose commit takes as long as
  // the backup's disk needs. A timeout gives the session up.
  // `cancel` (optional, kWhileAlive only): once true, the wait ends with
  // Closed("stop requested ...") and the session stays healthy, so the
  // caller can still end it cleanly with Stop() (BYE).
  static constexpr std::chrono::milliseconds kWhileAlive = std::chrono::milliseconds::max();
  Status WaitAck(uint64_t epoch, std::chrono::milliseconds timeout,
                 const std::atomic<bool>* cancel = nullptr);
  // Last acked epoch, or -1 if none yet. Thread-safe.
  int64_t last_acked() const;
  // Time from EndEpoch's last byte written to the ack's arrival for the last acked epoch.
  std::chrono::microseconds last_ack_latency() const;
  // False once the connection failed or the backup went silent.
  bool healthy() const;
  Status failure() const;  // why it is not healthy

  // Destroying a sender without a successful Stop() gives the session up:
  // the connection is drained in the background (SenderOptions::drain_timeout)
  // and the destructor returns at once.
  // Clean stop: sends BYE ("stop replicating, don't fail over") and closes.
  // kHandover (planned switchover) tells the backup to activate instead;
  // kGuestShutdown that the guest itself ended, `text` saying how (cut to
  // the BYE's 256 bytes). An empty text gives the reason's usual words.
  Status Stop(protocol::ByeReason reason = protocol::ByeReason::kOperatorStop, std::string text = {});

  // Digest of the guest as last sent, split into `regions` equal pfn ranges
  // (the last one takes the remainder). Call only between epochs, from the
  // thread driving the epochs (the digest is updated by AddPage).
  std::vector<uint64_t> RegionSums(uint32_t regions) const;
  uint64_t guest_pages() const;

  const compress::PageCache& cache() const;

  struct Impl;  // checkpoint_sender_impl.h (internal)

 private:
  CheckpointSender() = default;
  std::unique_ptr<Impl> impl_;
};

}  // namespace romulus::replicator
