#include "restore/checkpoint_receiver.h"

#include <spdlog/spdlog.h>
#include <time.h>

#include <atomic>
#include <cstring>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>

#include "buffer/reusable_buffer.h"
#include "common/clock.h"
#include "common/digest.h"
#include "common/thread_annotations.h"
#include "common/thread_name.h"
#include "common/units.h"
#include "compress/page_batch.h"
#include "protocol/disk_records.h"
#include "protocol/frame.h"
#include "protocol/frame_io.h"
#include "protocol/handshake.h"
#include "protocol/disk_digests.h"
#include "protocol/held_pages.h"
#include "protocol/messages.h"
#include "transport/stream.h"

namespace romulus::restore {

using Clock = std::chrono::steady_clock;
using protocol::FrameType;

namespace {

// Upper bound of one state record reassembled from STATE pieces.
constexpr size_t kMaxStateRecord = size_t{64} << 20;

}  // namespace

struct CheckpointReceiver::Impl {
  ReceiverOptions opts;
  // Kept across sessions: one frame at a time, capacity grows to the largest
  // frame seen and stays there.
  buffer::ReusableBuffer frames{64 * 1024, protocol::kMaxPayload};
  buffer::ReusableBuffer state{0, kMaxStateRecord};
  alignas(64) uint8_t page[4096];
};

CheckpointReceiver::CheckpointReceiver(const ReceiverOptions& opts) : impl_(std::make_unique<Impl>()) {
  impl_->opts = opts;
}
CheckpointReceiver::~CheckpointReceiver() = default;

namespace {

// Sends heartbeats to the primary from its own thread while a session lasts.
class HeartbeatSender {
 public:
  HeartbeatSender(protocol::FrameWriter* writer, std::chrono::milliseconds every,
                  const std::atomic<uint64_t>* committed)
      : writer_(writer), every_(every), committed_(committed), thread_([this] {
          NameThisThread("heartbeat");
          Loop();
        }) {}
  ~HeartbeatSender() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

 private:
  void Loop() {
    std::unique_lock<std::mutex> lock(mu_);
    while (!stop_) {
      cv_.wait_for(lock, every_);
      if (stop_) break;
      protocol::Heartbeat hb;
      hb.send_ns = MonotonicNs();
      hb.committed = committed_->load();
      lock.unlock();
      Status st = writer_->Send(hb, hb.committed);
      lock.lock();
      if (!st.ok()) break;  // the read loop notices the broken connection
    }
  }
  protocol::FrameWriter* writer_;
  std::chrono::milliseconds every_;
  const std::atomic<uint64_t>* committed_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace

Result<protocol::Hello> CheckpointReceiver::ReadHello(transport::Stream& stream, transport::Deadline deadline) {
  // A HELLO is small: a bounded buffer of its own, nothing shared.
  buffer::ReusableBuffer rb(1024, 64 * 1024);
  protocol::FrameReader reader(&stream, &rb);
  auto first = reader.Next(deadline);
  if (!first.ok()) return first.status().With("waiting for HELLO from " + stream.Peer());
  if (first->type() != FrameType::kHello) {
    return Status::Corruption("expected HELLO, got " + protocol::FrameTypeName(first->header.type));
  }
  return protocol::Hello::Decode(first->payload);
}

SessionEnd CheckpointReceiver::Serve(transport::Stream& stream, GuestSink& sink, const CommitCallback& on_commit) {
  auto hello = ReadHello(stream, transport::DeadlineIn(impl_->opts.hello_timeout));
  if (!hello.ok()) {
    SessionEnd end;
    end.reason = hello.status();
    if (hello.status().code() == Code::kCorruption) {
      protocol::FrameWriter writer(&stream);
      (void)writer.Send(protocol::Error::Make(protocol::ErrorCode::kProtocol, hello.status().message()), 0,
                        transport::DeadlineIn(std::chrono::milliseconds(200)));
    }
    stream.Shutdown();
    return end;
  }
  RunningClock clock(Clock::now());
  return Serve(stream, *hello, sink, clock, on_commit);
}

namespace {

// Position of disk `id` in the HELLO's list; disks.size() if unknown.
size_t DiskIndex(const std::vector<protocol::DiskInfo>& disks, uint32_t id) {
  for (size_t i = 0; i < disks.size(); ++i) {
    if (disks[i].id == id) return i;
  }
  return disks.size();
}

// Which side a sink failure belongs to: bad data from the primary (it is
// alive and will resynchronise) or this backup's own storage (never a
// reason to activate: docs/FAILURE-MODEL.md §5).
EndCause SinkFailureCause(const Status& st) {
  switch (st.code()) {
    case Code::kCorruption:
    case Code::kOutOfRange:
    case Code::kInvalidArgument:
      return EndCause::kCorruptStream;
    default:
      return EndCause::kLocalFailure;
  }
}

// The ERROR code a sink's failure is told to the primary with: a guest this
// backup cannot hold (Unsupported, e.g. a guest type it cannot resume) is a
// missing capability, not a shortage of resources.
protocol::ErrorCode SinkErrorCode(const Status& st) {
  return st.code() == Code::kUnsupported ? protocol::ErrorCode::kCapabilities : protocol::ErrorCode::kResource;
}

}  // namespace

SessionEnd CheckpointReceiver::Serve(transport::Stream& stream, const protocol::Hello& hello_in, GuestSink& sink,
                                     RunningClock& clock, const CommitCallback& on_commit,
                                     const HeardCallback& on_heard) {
  Impl& im = *impl_;
  SessionEnd end;
  protocol::FrameWriter writer(&stream);
  protocol::FrameReader reader(&stream, &im.frames);
  const std::string peer = stream.Peer();
  const protocol::Hello* hello = &hello_in;
  bool first_committed = false;
  uint64_t realloc_base = 0;
  auto reallocs = [&] {
    uint64_t total = im.frames.reallocations() + im.state.reallocations();
    return first_committed ? total - realloc_base : 0;
  };
  // Running time of the last byte from the primary; the HELLO just came.
  auto heard_real = reader.last_byte_time();
  end.last_heard = clock.Advance(Clock::now());
  auto note_bytes = [&] {
    const auto now = clock.Advance(Clock::now());
    if (reader.last_byte_time() != heard_real) {
      heard_real = reader.last_byte_time();
      end.last_heard = now;
      if (on_heard) on_heard(now);
    }
    return now;
  };

  auto fail = [&](Status why, protocol::ErrorCode code, EndCause cause) {
    end.receive_reallocations = reallocs();
    if (code != protocol::ErrorCode::kNone) {
      (void)writer.Send(protocol::Error::Make(code, why.message()), 0,
                        transport::DeadlineIn(std::chrono::milliseconds(200)));
    }
    sink.Discard();
    end.reason = std::move(why);
    end.cause = end.established ? cause : EndCause::kNotEstablished;
    stream.Shutdown();
    return end;
  };

  // Handshake.
  protocol::BackupPolicy policy;
  policy.max_cache_pages = im.opts.cache_pages;
  // HELD (§3.9) whenever the sink can describe its image; dropped below if not.
  policy.supported_capabilities = im.opts.capabilities | protocol::kCapHeldPages;
  // Disks only where the sink keeps them: a primary that requires kCapDisk
  // must not replicate memory whose disk this backup would drop.
  if (!sink.supports_disks()) policy.supported_capabilities &= ~protocol::kCapDisk;
  // A streaming disk copy (docs/DISK.md §7.1) only where the sink keeps a
  // partial copy as what it is, a first sync in progress that is never
  // resumed, and only while it holds no checkpoint that the partial copy
  // would overwrite; otherwise the primary copies each disk inside the
  // first epoch's pause.
  if (!sink.supports_disk_sync() || sink.has_committed()) {
    policy.supported_capabilities &= ~protocol::kCapDiskSync;
  }
  // A copy of only the changed regions (docs/DISK.md §7.2) where the sink
  // can say what its committed disks hold.
  if (!sink.supports_disk_delta()) policy.supported_capabilities &= ~protocol::kCapDiskDelta;
  // A disk copied whole carries only the chunks that differ from what the
  // sink holds (docs/DISK.md §7.4) where the sink can describe its disks.
  if (!sink.supports_disk_digests()) policy.supported_capabilities &= ~protocol::kCapDiskDigests;
  policy.max_guest_pages = im.opts.max_guest_pages;
  policy.xen_release = sink.xen_release();
  policy.committed_epoch = sink.has_committed() ? sink.last_committed_epoch() : 0;
  protocol::HelloAck ack = protocol::Negotiate(*hello, policy);
  if (!ack.accepted && ack.error == protocol::ErrorCode::kCapabilities &&
      (hello->required & protocol::kCapDisk) != 0 && (policy.supported_capabilities & protocol::kCapDisk) == 0) {
    ack.text = std::string("this backup cannot keep the guest's disks (kCapDisk required): ") +
               (sink.supports_disks() ? "disk replication is disabled on this backup"
                                      : "its guest sink replicates memory only");
  }
  const bool with_disks = ack.accepted && (ack.capabilities & protocol::kCapDisk) != 0;
  // A disk's sync state means nothing without disks.
  if (!with_disks) {
    ack.capabilities &=
        ~(protocol::kCapDiskSync | protocol::kCapDiskDelta | protocol::kCapDiskDigests | protocol::kCapDiskFloor);
  }
  // The floors only say which disks to describe.
  if ((ack.capabilities & protocol::kCapDiskDelta) == 0 || (ack.capabilities & protocol::kCapDiskDigests) == 0) {
    ack.capabilities &= ~protocol::kCapDiskFloor;
  }
  const bool sync_agreed = (ack.capabilities & protocol::kCapDiskSync) != 0;
  const bool delta_agreed = (ack.capabilities & protocol::kCapDiskDelta) != 0;
  const std::vector<protocol::DiskInfo> no_disks;
  const std::vector<protocol::DiskInfo>& disks = with_disks ? hello->disks : no_disks;
  std::unique_ptr<compress::PageDecoder> decoder;
  std::unique_ptr<MemoryDigest> digest;
  bool local_refusal = false;
  if (ack.accepted) {
    Status st = with_disks ? sink.BeginSessionWithDisks(hello->guest_pages, hello->identity, disks)
                           : sink.BeginSession(hello->guest_pages, hello->identity);
    local_refusal = !st.ok() && SinkFailureCause(st) == EndCause::kLocalFailure;
    compress::CodecOptions codec;
    codec.cache_pages = hello->cache_pages;
    if (st.ok()) {
      auto d = compress::PageDecoder::Create(codec, hello->guest_pages);
      if (d.ok()) decoder = std::move(*d);
      else st = d.status();
    }
    if (st.ok()) {
      auto d = MemoryDigest::Create(hello->guest_pages);
      if (d.ok()) digest = std::move(*d);
      else st = d.status();
    }
    // What the session's first epoch applies on: the committed disks the
    // sink can name (the primary copies only what changed since).
    // (After the sink learnt the session's lineages: what it voided for
    // another front end is not named.)
    if (st.ok() && with_disks) {
      const std::vector<uint64_t> none(disks.size(), 0);
      st = sink.SetSessionDiskLineages(delta_agreed ? std::span<const uint64_t>(hello->disk_lineages)
                                                    : std::span<const uint64_t>(none));
    }
    if (st.ok() && delta_agreed) ack.disks_held = sink.held_disks();
    if (st.ok() && (ack.capabilities & protocol::kCapHeldPages) != 0) {
      // The session's first epoch applies on top of what the sink holds
      // now: that is the HELD table, and where this session's digest starts.
      const MemoryDigest* held = sink.held_pages();
      if (held == nullptr) {
        ack.capabilities &= ~protocol::kCapHeldPages;
      } else {
        st = digest->CopyFrom(*held);
      }
    }
    if (!st.ok()) {
      ack.accepted = false;
      ack.error = protocol::ErrorCode::kResource;
      ack.text = st.message().substr(0, protocol::kMaxShortText);
    }
  }
  Status sent = writer.Send(ack, 0);
  if (!ack.accepted) {
    spdlog::error("refused primary {} ({}): {}", peer, protocol::ErrorCodeName(static_cast<uint16_t>(ack.error)),
                  ack.text);
    // A refusal for this backup's own storage (ENOSPC at BeginSession) is
    // a local failure of an established peer; any other refusal says the
    // peer is not (yet) our primary.
    if (local_refusal) {
      end.established = true;
    } else {
      end.refused_identity = hello->identity;
    }
    return fail(Status::Unsupported("refused primary: " + ack.text), protocol::ErrorCode::kNone,
                EndCause::kLocalFailure);
  }
  if (!sent.ok()) return fail(sent, protocol::ErrorCode::kNone, EndCause::kConnectionLost);
  end.established = true;
  if ((ack.capabilities & protocol::kCapHeldPages) != 0) {
    Status held = protocol::SendHeldPages(&writer, *digest, std::chrono::milliseconds(10000));
    if (!held.ok()) return fail(held, protocol::ErrorCode::kNone, EndCause::kConnectionLost);
  }
  if ((ack.capabilities & protocol::kCapDiskDigests) != 0) {
    // What each disk holds, chunk by chunk, except a disk held as of the
    // session's own lineage at a tag its front end still knows the changes
    // since (kCapDiskFloor; without it, at any tag): the primary copies only
    // its changed regions (§7.2) and needs no table for it.
    const bool floors = (ack.capabilities & protocol::kCapDiskFloor) != 0;
    std::vector<bool> needs_table(disks.size(), true);
    for (size_t i = 0; i < disks.size(); ++i) {
      for (const protocol::DiskHeld& h : ack.disks_held) {
        if (h.disk_id != disks[i].id || i >= hello->disk_lineages.size() || h.lineage != hello->disk_lineages[i]) {
          continue;
        }
        if (!floors || i >= hello->disk_change_floors.size() || h.tag >= hello->disk_change_floors[i]) {
          needs_table[i] = false;
        } else {
          spdlog::info("disk {}: held as of tag {}, older than the primary's changes reach (tag {}): describing it, "
                       "so that its whole copy carries only what differs",
                       protocol::Printable(disks[i].name), h.tag, hello->disk_change_floors[i]);
        }
      }
    }
    uint64_t described = 0, total = 0;
    uint32_t logged_tenth = 0;
    bool sink_failed = false;
    for (size_t i = 0; i < disks.size(); ++i) total += needs_table[i] ? protocol::DiskChunks(disks[i].size_bytes) : 0;
    auto describe = [&](size_t i, uint64_t first_chunk, std::span<protocol::ChunkHash> out) -> Status {
      if (!needs_table[i]) return Status::Unsupported("held as of the session's lineage");
      Status st = sink.DescribeDisk(disks[i].id, first_chunk, out);
      if (st.ok()) described += out.size();
      // Unsupported before a disk's first frame is an answer (ABSENT: the
      // disk is copied whole); any other failure is this backup's own,
      // whatever its code.
      if (!st.ok() && (st.code() != Code::kUnsupported || first_chunk != 0)) sink_failed = true;
      // Reading a large disk takes a while: a line per 10% of 4 GiB or more.
      const uint32_t tenth = total == 0 ? 0 : static_cast<uint32_t>(described * 10 / total);
      if (st.ok() && total >= 4096 && tenth > logged_tenth && tenth < 10) {
        logged_tenth = tenth;
        spdlog::info("describing its disks to the primary: {}0% of {} read", tenth,
                     FormatSize(total * protocol::kDiskChunkBytes));
      }
      return st;
    };
    Status sent_digests = protocol::SendDiskDigests(&writer, disks, describe, std::chrono::seconds(30));
    if (!sent_digests.ok()) {
      // A disk this backup cannot read or describe is its own failure (the
      // primary hears ERROR resource); anything else is the connection's.
      const bool local = sink_failed;
      return fail(sent_digests, local ? protocol::ErrorCode::kResource : protocol::ErrorCode::kNone,
                  local ? EndCause::kLocalFailure : EndCause::kConnectionLost);
    }
    spdlog::info("described {} chunk(s) of {} of its disks to the primary", described, FormatSize(protocol::kDiskChunkBytes));
  }
  spdlog::info("session with {}: guest '{}', {} pages, cache {} pages, first epoch {} ({})", peer,
               protocol::Printable(hello->identity), hello->guest_pages, hello->cache_pages,
               hello->first_epoch, protocol::ResyncReasonName(hello->resync_reason));

  std::atomic<uint64_t> committed{policy.committed_epoch};
  const auto silence_limit = std::chrono::duration_cast<std::chrono::nanoseconds>(im.opts.failover_timeout);
  HeartbeatSender heartbeats(&writer, std::chrono::milliseconds(hello->heartbeat_ms), &committed);

  uint64_t epoch = hello->first_epoch;
  uint64_t pages = 0, states = 0, frames = 0, payload = 0, wire = 0;
  bool state_open = false;
  bool resized = false;  // this epoch began with CACHE_RESIZE
  const bool can_resize = (ack.capabilities & protocol::kCapCacheResize) != 0;
  const uint64_t guest_pages = hello->guest_pages;
  // Once a write to the primary failed, only its ERROR or BYE may still be
  // read, until this deadline.
  std::optional<transport::Deadline> read_on_until;
  Status write_failure;
  // Disks (PROTOCOL.md §3.10): per disk of the HELLO, the digest of what was
  // staged in the open epoch and whether its DISK_END arrived.
  protocol::DiskFrameParser disk_parser;
  std::vector<std::unique_ptr<protocol::DiskRecordDigest>> disk_digests;
  for (size_t d = 0; d < disks.size(); ++d) disk_digests.push_back(std::make_unique<protocol::DiskRecordDigest>());
  std::vector<bool> disk_ended(disks.size(), false);
  std::vector<uint32_t> disk_sync(disks.size(), 0);  // DISK_END's sync state, this epoch
  std::vector<uint64_t> disk_tag(disks.size(), 0);   // DISK_END's tag (kCapDiskDelta), this epoch

  while (true) {
    const auto tick = std::chrono::duration_cast<std::chrono::milliseconds>(RunningClock::kTick);
    auto deadline = transport::DeadlineIn(tick);
    if (read_on_until) deadline = std::min(deadline, *read_on_until);
    auto frame = reader.Next(deadline);
    const auto now = note_bytes();
    if (!frame.ok()) {
      const Status& st = frame.status();
      if (read_on_until) {
        if (st.code() == Code::kTimeout && Clock::now() < *read_on_until) continue;
        return fail(write_failure, protocol::ErrorCode::kNone, EndCause::kConnectionLost);
      }
      if (st.code() == Code::kTimeout) {
        const auto silent = now - end.last_heard;
        if (silent < silence_limit) continue;
        return fail(Status::Timeout("primary silent for " +
                                    std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(silent).count()) +
                                    " ms (running time; --failover-timeout " +
                                    std::to_string(im.opts.failover_timeout.count()) + " ms)"),
                    protocol::ErrorCode::kNone, EndCause::kSilence);
      }
      if (st.code() == Code::kClosed || st.code() == Code::kIoError || st.code() == Code::kTimeout) {
        return fail(st, protocol::ErrorCode::kNone, EndCause::kConnectionLost);
      }
      // Bad bytes (checksum, oversize length): the primary sent them.
      return fail(st, protocol::ErrorCodeFor(st), EndCause::kCorruptStream);
    }
    const protocol::Frame& f = *frame;
    wire += protocol::kFrameHeaderSize + f.payload.size();
    if (read_on_until && f.type() != FrameType::kError && f.type() != FrameType::kBye) continue;
    switch (f.type()) {
      case FrameType::kHeartbeat:
        continue;
      case FrameType::kBye: {
        sink.Discard();
        auto theirs = protocol::Bye::Decode(f.payload);
        if (theirs.ok()) end.bye_reason = theirs->reason;
        end.bye_text = theirs.ok() ? protocol::Printable(theirs->text) : "?";
        protocol::Bye bye;
        bye.reason = protocol::ByeReason::kOperatorStop;
        bye.text = "backup acknowledges the stop";
        (void)writer.Send(bye, committed.load());
        end.clean_stop = true;
        if (end.bye_reason == protocol::ByeReason::kGuestShutdown) {
          // Not "stopped by the operator": the primary's guest ended on its
          // own (shut down, or died), and the BYE's text says how.
          end.cause = EndCause::kByeGuestStopped;
          spdlog::warn("the primary reports that its guest stopped ({}); not failing over: the last checkpoint "
                       "is of a guest that was about to shut down or die",
                       end.bye_text);
        } else {
          end.cause = end.bye_reason == protocol::ByeReason::kHandover ? EndCause::kByeHandover : EndCause::kByeStop;
          spdlog::info("primary stopped replication cleanly ({}); not failing over", end.bye_text);
        }
        end.reason = Status::Ok();
        end.receive_reallocations = reallocs();
        stream.Shutdown();
        return end;
      }
      case FrameType::kError: {
        return fail(Status::Closed("primary reported an error: " + protocol::DescribeErrorPayload(f.payload)),
                    protocol::ErrorCode::kNone, EndCause::kPeerError);
      }
      case FrameType::kPages:
      case FrameType::kState:
      case FrameType::kEpochEnd:
      case FrameType::kCacheResize:
        break;
      case FrameType::kDisk:
      case FrameType::kDiskEnd:
        if (with_disks) break;
        return fail(Status::Corruption(protocol::FrameTypeName(f.header.type) + " frame although disks were not agreed"),
                    protocol::ErrorCode::kProtocol, EndCause::kCorruptStream);
      default:
        return fail(Status::Corruption("unexpected " + protocol::FrameTypeName(f.header.type) + " frame"),
                    protocol::ErrorCode::kProtocol, EndCause::kCorruptStream);
    }
    if (f.epoch() != epoch) {
      return fail(Status::Corruption("frame for epoch " + std::to_string(f.epoch()) + " while epoch " +
                                     std::to_string(epoch) + " is open"),
                  protocol::ErrorCode::kProtocol, EndCause::kCorruptStream);
    }
    if (f.type() == FrameType::kCacheResize) {
      // §3.8: only when agreed, only as the epoch's first frame (the mirror
      // must change exactly where the primary's cache did: before page 1).
      if (!can_resize) {
        return fail(Status::Corruption("CACHE_RESIZE although cache resizing was not agreed"),
                    protocol::ErrorCode::kProtocol, EndCause::kCorruptStream);
      }
      if (resized || frames != 0 || pages != 0 || state_open) {
        return fail(Status::Corruption("CACHE_RESIZE is not the first frame of epoch " + std::to_string(epoch)),
                    protocol::ErrorCode::kProtocol, EndCause::kCorruptStream);
      }
      auto req = protocol::CacheResize::Decode(f.payload);
      if (!req.ok()) return fail(req.status(), protocol::ErrorCode::kProtocol, EndCause::kCorruptStream);
      // Refusals are OutOfRange: the primary is alive and resynchronises
      // (with a size it then has to fit at HELLO), so no failover.
      if (im.opts.cache_pages != 0 && req->cache_pages > im.opts.cache_pages) {
        return fail(Status::OutOfRange("CACHE_RESIZE to " + std::to_string(req->cache_pages) +
                                       " pages exceeds this backup's limit of " +
                                       std::to_string(im.opts.cache_pages)),
                    protocol::ErrorCode::kResource, EndCause::kCorruptStream);
      }
      Status st = decoder->cache().Resize(req->cache_pages);
      if (!st.ok()) {
        return fail(Status::OutOfRange("CACHE_RESIZE to " + std::to_string(req->cache_pages) +
                                       " pages: " + st.message()),
                    protocol::ErrorCode::kResource, EndCause::kCorruptStream);
      }
      resized = true;
      spdlog::info("mirror cache resized to {} pages at epoch {}", decoder->cache().capacity_pages(), epoch);
      continue;
    }
    if (f.type() == FrameType::kDisk) {
      // The whole frame is validated (bounds against the disk's size, LZ4,
      // lengths) before any record of it reaches the sink.
      Status st = disk_parser.Open(f.payload, disks);
      if (!st.ok()) {
        return fail(st.With("DISK frame of epoch " + std::to_string(epoch)), protocol::ErrorCode::kProtocol,
                    EndCause::kCorruptStream);
      }
      const size_t d = DiskIndex(disks, disk_parser.disk_id());
      if (disk_ended[d]) {
        return fail(Status::Corruption("DISK frame for disk " + std::to_string(disk_parser.disk_id()) +
                                       " after its DISK_END in epoch " + std::to_string(epoch)),
                    protocol::ErrorCode::kProtocol, EndCause::kCorruptStream);
      }
      protocol::DiskRecord rec;
      while (disk_parser.Next(&rec)) {
        disk_digests[d]->Add(rec);
        st = sink.OnDisk(epoch, disk_parser.disk_id(), rec);
        if (!st.ok()) return fail(st.With("staging disk record"), protocol::ErrorCode::kResource, SinkFailureCause(st));
      }
      continue;
    }
    if (f.type() == FrameType::kDiskEnd) {
      auto de = protocol::DiskEnd::Decode(f.payload, sync_agreed, delta_agreed);
      if (!de.ok()) return fail(de.status(), protocol::ErrorCode::kProtocol, EndCause::kCorruptStream);
      const size_t d = DiskIndex(disks, de->disk_id);
      if (d == disks.size()) {
        return fail(Status::Corruption("DISK_END for unknown disk " + std::to_string(de->disk_id)),
                    protocol::ErrorCode::kProtocol, EndCause::kCorruptStream);
      }
      if (disk_ended[d]) {
        return fail(Status::Corruption("second DISK_END for disk " + std::to_string(de->disk_id) + " in epoch " +
                                       std::to_string(epoch)),
                    protocol::ErrorCode::kProtocol, EndCause::kCorruptStream);
      }
      const protocol::DiskRecordDigest& dd = *disk_digests[d];
      if (de->record_count != dd.records() || de->data_bytes != dd.data_bytes() || de->digest != dd.value()) {
        return fail(Status::Corruption("epoch " + std::to_string(epoch) + " disk " + std::to_string(de->disk_id) +
                                       " (" + protocol::Printable(disks[d].name) + ") mismatch: primary " +
                                       std::to_string(de->record_count) + " records/" +
                                       std::to_string(de->data_bytes) + " bytes/" + DigestHex(de->digest) +
                                       ", backup staged " + std::to_string(dd.records()) + "/" +
                                       std::to_string(dd.data_bytes()) + "/" + DigestHex(dd.value()) +
                                       "; keeping the last good epoch"),
                    protocol::ErrorCode::kDigestMismatch, EndCause::kCorruptStream);
      }
      disk_ended[d] = true;
      disk_sync[d] = de->sync_state;
      disk_tag[d] = de->tag;
      continue;
    }
    if (f.type() == FrameType::kPages) {
      ++frames;
      payload += f.payload.size();
      compress::BatchReader batch(f.payload, guest_pages);
      compress::PageEntry entry;
      while (true) {
        auto more = batch.Next(&entry);
        if (!more.ok()) {
          return fail(more.status().With("epoch " + std::to_string(epoch)), protocol::ErrorCode::kDecode,
                      EndCause::kCorruptStream);
        }
        if (!*more) break;
        Status st = decoder->Decode(entry, im.page);
        if (!st.ok()) {
          return fail(st.With("page " + std::to_string(entry.pfn)), protocol::ErrorCode::kDecode,
                      EndCause::kCorruptStream);
        }
        digest->Update(entry.pfn, im.page);
        st = sink.OnPage(epoch, entry.pfn, im.page);
        if (!st.ok()) return fail(st.With("staging page"), protocol::ErrorCode::kResource, SinkFailureCause(st));
        ++pages;
      }
      continue;
    }
    if (f.type() == FrameType::kState) {
      ++frames;
      payload += f.payload.size();
      if (!state_open) im.state.Clear();
      auto dst = im.state.Append(f.payload.size());
      if (!dst.ok()) {
        return fail(dst.status().With("state record"), protocol::ErrorCode::kResource, EndCause::kCorruptStream);
      }
      if (!f.payload.empty()) std::memcpy(*dst, f.payload.data(), f.payload.size());
      im.state.Commit(f.payload.size());
      state_open = (f.header.flags & protocol::kFlagMore) != 0;
      if (!state_open) {
        Status st = sink.OnState(epoch, im.state.view());
        if (!st.ok()) return fail(st.With("state record"), SinkErrorCode(st), SinkFailureCause(st));
        ++states;
      }
      continue;
    }
    // EPOCH_END: verify everything, then commit, then ack.
    auto ee = protocol::EpochEnd::Decode(f.payload);
    if (!ee.ok()) return fail(ee.status(), protocol::ErrorCode::kProtocol, EndCause::kCorruptStream);
    if (state_open || ee->page_count != pages || ee->state_count != states || ee->frame_count != frames ||
        ee->payload_bytes != payload) {
      return fail(Status::Corruption("epoch " + std::to_string(epoch) + " incomplete: got " +
                                     std::to_string(pages) + " pages/" + std::to_string(states) +
                                     " states/" + std::to_string(frames) + " frames, primary sent " +
                                     std::to_string(ee->page_count) + "/" + std::to_string(ee->state_count) +
                                     "/" + std::to_string(ee->frame_count)),
                  protocol::ErrorCode::kProtocol, EndCause::kCorruptStream);
    }
    for (size_t d = 0; d < disks.size(); ++d) {
      if (!disk_ended[d]) {
        return fail(Status::Corruption("epoch " + std::to_string(epoch) + " ended without DISK_END for disk " +
                                       std::to_string(disks[d].id) + " (" + protocol::Printable(disks[d].name) +
                                       ")"),
                    protocol::ErrorCode::kProtocol, EndCause::kCorruptStream);
      }
    }
    if (ee->digest != digest->value()) {
      return fail(Status::Corruption("epoch " + std::to_string(epoch) + " digest mismatch: primary " +
                                     DigestHex(ee->digest) + ", backup " + DigestHex(digest->value()) +
                                     "; keeping the last good epoch"),
                  protocol::ErrorCode::kDigestMismatch, EndCause::kCorruptStream);
    }
    // kCapDiskSync: which disks are still being copied after this epoch.
    std::string incomplete;
    for (size_t d = 0; d < disks.size(); ++d) {
      if (disk_sync[d] == 0) continue;
      incomplete += std::string(incomplete.empty() ? "" : ", ") + "disk " + protocol::Printable(disks[d].name) +
                    " is still being copied (" + std::to_string(protocol::SyncPercent(disk_sync[d])) + "%)";
    }
    // What each disk holds once this epoch commits: the primary's tag of
    // it (kCapDiskDelta), else nothing the sink could name.
    for (size_t d = 0; d < disks.size(); ++d) {
      sink.StageDiskLineage(disks[d].id, delta_agreed ? hello->disk_lineages[d] : 0, delta_agreed ? disk_tag[d] : 0);
    }
    // An epoch whose disks are not whole is applied (the copy goes on) but
    // never becomes the sink's resumable checkpoint.
    Status st = incomplete.empty() ? sink.Commit(epoch) : sink.CommitIncomplete(epoch);
    if (!st.ok() && sink.has_committed() && sink.last_committed_epoch() == epoch && on_commit) {
      // The sink failed after its commit point: epoch N is what it holds now
      // (and what it would activate), so record it as committed, with its
      // digest, but never ack it (the primary must not release N's output
      // on a commit we could not finish).
      const compress::PageCache& cache = decoder->cache();
      on_commit(CommitEvent{epoch, ee->digest, pages, wire, cache.capacity_pages(), 0, guest_pages, incomplete});
    }
    if (!st.ok()) {
      // Never activate on our own failure: the sink kept the last checkpoint;
      // tell the primary (ERROR resource) so it reports UNPROTECTED and why.
      spdlog::error("cannot commit epoch {}: {}; keeping epoch {} and telling the primary", epoch, st.ToString(),
                    sink.has_committed() ? std::to_string(sink.last_committed_epoch()) : std::string("(none)"));
      return fail(st.With("committing epoch " + std::to_string(epoch)), protocol::ErrorCode::kResource,
                  SinkFailureCause(st));
    }
    committed.store(epoch);
    ++end.epochs_committed;
    protocol::Ack a;
    a.epoch = epoch;
    a.digest = ee->digest;
    Status acked = writer.Send(a, epoch);
    if (on_commit) {
      const compress::PageCache& cache = decoder->cache();
      on_commit(CommitEvent{epoch, ee->digest, pages, wire, cache.capacity_pages(),
                            im.opts.digest_cache_on_commit ? cache.StateDigest() : 0, guest_pages, incomplete});
    }
    if (!acked.ok()) {
      // The primary may have given up on us (we were stalled) and said so:
      // its ERROR may still be in our receive queue. Read on briefly for it.
      write_failure = acked.With("sending ack");
      read_on_until = transport::DeadlineIn(im.opts.read_on_after_write_failure);
      spdlog::warn("{}; reading on for the primary's last word", write_failure.ToString());
      continue;
    }
    if (!first_committed) {  // steady state starts after the full sync
      first_committed = true;
      realloc_base = im.frames.reallocations() + im.state.reallocations();
    }
    ++epoch;
    pages = states = frames = payload = wire = 0;
    resized = false;
    for (size_t d = 0; d < disks.size(); ++d) {
      disk_ended[d] = false;
      disk_sync[d] = 0;
      disk_digests[d]->Reset();
    }
  }
}

}  // namespace romulus::restore
