#include "disk/tap_server.h"

#include <unistd.h>

#include <algorithm>

#include <spdlog/spdlog.h>

#include "disk/export_socket.h"
#include "transport/fd_stream.h"
#include "transport/stream.h"

namespace romulus::disk {
namespace {

using transport::Deadline;
using transport::DeadlineIn;
using transport::NoDeadline;

// One RECORDS message holds at least one whole 1 MiB write; 2 MiB keeps the
// messages large enough to amortise their headers (as the engine's frames).
constexpr size_t kRecordsCapacity = size_t{2} << 20;

Status WriteMessage(transport::Stream* s, tap::MsgType type, std::span<const uint8_t> payload, Deadline deadline) {
  uint8_t header[tap::kHeaderSize];
  tap::EncodeHeader(header, type, static_cast<uint32_t>(payload.size()));
  std::span<const uint8_t> parts[2] = {header, payload};
  return s->WriteAllV(parts, deadline);
}

}  // namespace

Result<std::unique_ptr<TapServer>> TapServer::Create(TapTarget target, TapServerOptions options) {
  if (!target.nbd || !target.copy_store || !target.clock || !target.log || !target.gate) {
    return Status::InvalidArgument("tap server: NBD server, copy store, clock, log and gate are required");
  }
  if (!tap::IsCleanName(target.name)) {
    return Status::InvalidArgument("tap server: export name '" + target.name + "' is not 1.." +
                                   std::to_string(tap::kMaxName) + " bytes of [A-Za-z0-9._-]");
  }
  if (options.message_timeout.count() <= 0 || options.reply_timeout.count() <= 0 || options.idle_timeout.count() <= 0 ||
      options.hold_timeout.count() <= 0) {
    return Status::InvalidArgument("tap server: timeouts must be positive");
  }
  return std::unique_ptr<TapServer>(new TapServer(std::move(target), options));
}

TapServer::TapServer(TapTarget target, TapServerOptions options)
    : t_(std::move(target)), options_(options), builder_(kRecordsCapacity) {}

bool TapServer::attached() const {
  std::lock_guard<std::mutex> lock(mu_);
  return active_ != nullptr;
}

TapServerStats TapServer::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void TapServer::Stop() {
  std::lock_guard<std::mutex> lock(mu_);
  stopped_ = true;
  if (active_) active_->Shutdown();
}

Status TapServer::SendError(transport::Stream* s, const Status& why, Deadline deadline) {
  uint8_t buf[tap::kErrorFixed + tap::kMaxErrorText];
  const Code code = why.ok() ? Code::kInternal : why.code();
  const size_t n = tap::EncodeError(buf, code, why.message());
  return WriteMessage(s, tap::MsgType::kError, std::span<const uint8_t>(buf, n), deadline);
}

Status TapServer::Serve(int fd) {
  const std::string peer = PeerName(fd);
  auto opened = transport::OpenFdStream(fd, fd, "tap client " + peer, true);
  if (!opened.ok()) {
    ::close(fd);
    return opened.status();
  }
  std::unique_ptr<transport::Stream> stream = std::move(*opened);
  const Deadline refusal_deadline = DeadlineIn(std::chrono::milliseconds(1000));
  Status cred = CheckPeer(fd, "tap socket of export '" + t_.name + "'");
  if (!cred.ok()) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++stats_.refused;
    }
    spdlog::warn("disk export '{}': {}", t_.name, cred.message());
    (void)SendError(stream.get(), cred, refusal_deadline);
    stream->Close();
    return cred;
  }
  std::string holder;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopped_) {
      stream->Close();
      return Status::Closed("tap server stopped");
    }
    if (active_) {
      holder = active_peer_;
      ++stats_.refused;
    } else {
      active_ = stream.get();
      active_peer_ = peer;
      ++stats_.attaches;
    }
  }
  if (!holder.empty()) {
    // One replicator at a time: the log has one reader. The first keeps
    // working; this one hears why.
    Status busy = Status::InvalidArgument("disk export '" + t_.name + "' already has a replicator attached (" +
                                          holder + "); one replicator at a time");
    spdlog::warn("disk export '{}': refused a second tap client ({}): a replicator ({}) is attached", t_.name,
                 peer, holder);
    (void)SendError(stream.get(), busy, refusal_deadline);
    stream->Close();
    return busy;
  }
  spdlog::info("disk export '{}': replicator attached ({}); logging starts with its full copy", t_.name, peer);
  need_full_copy_ = true;
  last_sealed_ = 0;
  Status st = ServeAttached(stream.get());
  Detach(st);
  bool stopped;
  {
    std::lock_guard<std::mutex> lock(mu_);
    active_ = nullptr;
    active_peer_.clear();
    ++stats_.detaches;
    if (!st.ok() && st.code() != Code::kClosed) ++stats_.dropped;
    stopped = stopped_;
  }
  stream->Close();
  if (stopped) return Status::Closed("tap server stopped");
  return st;
}

void TapServer::StopSync() {
  if (sync_) sync_->Stop();
  streaming_ = false;
}

void TapServer::Detach(const Status& why) {
  // Before the hold below: the copier may be waiting for one itself.
  StopSync();
  // Back to not logging, an empty log: the guest goes on as if no replicator
  // had ever been attached. Held so no request is half-reported meanwhile;
  // if the hold times out (a request stuck on its payload), a report racing
  // in is discarded by the next attach's Reset.
  const bool held = t_.nbd->Hold(DeadlineIn(options_.hold_timeout)).ok();
  t_.gate->set_logging(false);
  t_.log->Reset();
  if (held) t_.nbd->Unhold();
  if (why.ok() || why.code() == Code::kClosed) {
    spdlog::info("disk export '{}': replicator detached ({}); serving on, not logging", t_.name,
                 why.ok() ? "closed" : why.message());
  } else {
    spdlog::warn("disk export '{}': tap client dropped: {}; serving on, not logging", t_.name, why.ToString());
  }
}

Status TapServer::ServeAttached(transport::Stream* s) {
  // A table belongs to the connection that sent it.
  table_.reset();
  table_whole_ = false;
  {
    uint8_t buf[tap::kHelloFixed + tap::kMaxName];
    tap::Hello h;
    h.instance_id = t_.instance_id;
    h.disk_size = t_.copy_store->size();
    h.log_budget = t_.log_budget;
    h.next_tag = t_.clock->current();
    h.features = tap::kFeatureStream | tap::kFeatureDigests |
                 (t_.log->tracks_changes() ? tap::kFeatureChanges | tap::kFeatureFloor : 0);
    h.name = t_.name;
    const size_t n = tap::EncodeHello(h, buf);
    ROMULUS_RETURN_IF_ERROR(WriteMessage(s, tap::MsgType::kHello, std::span<const uint8_t>(buf, n),
                                         DeadlineIn(options_.reply_timeout))
                                .With("sending HELLO"));
  }
  for (;;) {
    uint8_t hdr[tap::kHeaderSize];
    // Idle between messages up to idle_timeout; once a message has begun,
    // all of it must arrive within message_timeout.
    auto first = s->ReadSome(std::span<uint8_t>(hdr, 1), DeadlineIn(options_.idle_timeout));
    if (!first.ok()) {
      if (first.status().code() == Code::kClosed) return Status::Ok();  // closed between messages
      if (first.status().code() == Code::kTimeout) {
        return Status::Timeout("the replicator sent nothing for " + std::to_string(options_.idle_timeout.count()) +
                               " ms (stopped or hung?); detached, so another can attach");
      }
      return first.status();
    }
    const Deadline deadline = DeadlineIn(options_.message_timeout);
    size_t got = 0;
    Status rd = s->ReadExact(std::span<uint8_t>(hdr + 1, tap::kHeaderSize - 1), deadline, &got);
    if (!rd.ok()) return rd.With("reading a tap message header (" + std::to_string(got + 1) + " of 16 bytes)");
    auto header = tap::DecodeHeader(std::span<const uint8_t, tap::kHeaderSize>(hdr));
    if (!header.ok()) return header.status();
    // Only PAUSE, SEAL, ACKED, DIGESTS and FLOOR? travel this way; their
    // payloads are bounded (DIGESTS by 64 KiB, read into one reused buffer;
    // FLOOR? has none), so nothing else is ever read (or allocated) for a
    // hostile length.
    if (header->type == tap::MsgType::kFloorQuery) {
      // Through which tag the changes were forgotten (ACKED, from this
      // replicator or one before it).
      uint8_t f[tap::kFloorSize];
      tap::EncodeFloor(f, t_.log->changes_forgotten_through());
      ROMULUS_RETURN_IF_ERROR(WriteMessage(s, tap::MsgType::kFloor, f, DeadlineIn(options_.reply_timeout)));
      continue;
    }
    if (header->type == tap::MsgType::kDigests) {
      digests_buf_.resize(tap::MaxPayload(tap::MsgType::kDigests));
      rd = s->ReadExact(std::span<uint8_t>(digests_buf_.data(), header->length), deadline, &got);
      if (!rd.ok()) return rd.With("reading a tap DIGESTS payload");
      auto d = tap::DecodeDigests(std::span<const uint8_t>(digests_buf_.data(), header->length));
      if (!d.ok()) return d.status();
      ROMULUS_RETURN_IF_ERROR(TakeDigests(*d));
      continue;
    }
    if (header->type != tap::MsgType::kPause && header->type != tap::MsgType::kSeal &&
        header->type != tap::MsgType::kAcked) {
      return Status::Corruption(std::string("tap client sent ") + tap::MsgTypeName(header->type) +
                                ", which only the export sends");
    }
    uint8_t payload[std::max({tap::kSealSize, tap::kPauseChangedSize, tap::kAckedSize})];
    rd = s->ReadExact(std::span<uint8_t>(payload, header->length), deadline, &got);
    if (!rd.ok()) {
      return rd.With(std::string("reading a tap ") + tap::MsgTypeName(header->type) + " payload (" +
                     std::to_string(got) + " of " + std::to_string(header->length) + " bytes)");
    }
    std::span<const uint8_t> body(payload, header->length);
    if (header->type == tap::MsgType::kPause) {
      auto p = tap::DecodePause(body);
      if (!p.ok()) return p.status();
      // A table is for the copy PAUSE right after it, and only whole.
      if (table_ && !table_whole_) {
        return Status::Corruption("tap PAUSE after an incomplete DIGESTS table (" + std::to_string(table_->size()) +
                                  " chunks)");
      }
      std::shared_ptr<const protocol::DiskChunkTable> backup = std::move(table_);
      table_.reset();
      table_whole_ = false;
      ROMULUS_RETURN_IF_ERROR(HandlePause(s, *p, (p->full_copy || p->stream) ? std::move(backup) : nullptr));
    } else if (header->type == tap::MsgType::kAcked) {
      auto tag = tap::DecodeAcked(body);
      if (!tag.ok()) return tag.status();
      // The backup holds this tag: what changed up to it is not needed
      // again. No reply. A tag never paused cannot have been committed:
      // ignored (forgetting it would only cost full copies).
      if (*tag < t_.clock->current()) t_.log->ForgetChangesThrough(*tag);
      std::lock_guard<std::mutex> lock(mu_);
      ++stats_.acks;
    } else {
      auto p = tap::DecodeSeal(body);
      if (!p.ok()) return p.status();
      ROMULUS_RETURN_IF_ERROR(HandleSeal(s, *p));
    }
  }
}

Status TapServer::TakeDigests(const tap::Digests& d) {
  const uint64_t chunks = protocol::DiskChunks(t_.copy_store->size());
  if (d.first_chunk == 0) {
    // A new table (replacing one never used).
    table_ = std::make_shared<protocol::DiskChunkTable>();
    table_whole_ = false;
  }
  if (!table_ || table_whole_) {
    return Status::Corruption("tap DIGESTS at chunk " + std::to_string(d.first_chunk) + " without a table to continue");
  }
  ROMULUS_RETURN_IF_ERROR(protocol::AppendChunkHashes(table_.get(), chunks, d.first_chunk, d.hashes, d.last, "tap DIGESTS"));
  table_whole_ = d.last;
  return Status::Ok();
}

Status TapServer::HandlePause(transport::Stream* s, const tap::Pause& p,
                              std::shared_ptr<const protocol::DiskChunkTable> backup) {
  const Deadline reply_deadline = DeadlineIn(options_.reply_timeout);
  if (p.changed && !t_.log->tracks_changes()) {
    return SendError(s, Status::Unsupported("disk export '" + t_.name + "' does not track its changes"),
                     reply_deadline);
  }
  if (p.changed && p.lineage != t_.instance_id) {
    // The backup's copy came from another instance of this export (or
    // another export): its tags are not ours.
    return SendError(s, Status::Unsupported("disk export '" + t_.name + "': the backup's copy is of another export instance"),
                     reply_deadline);
  }
  if (p.changed && (p.since >= t_.clock->current() || !t_.log->ChangesKnownSince(p.since))) {
    // A tag never paused (a client's bug or lie), or one whose changes were
    // forgotten: refused before anything (a copy in progress included) is
    // touched; the replicator asks for a full copy next.
    return SendError(s, Status::Unsupported("disk export '" + t_.name + "': the changes since tag " +
                                            std::to_string(p.since) + " are not known"),
                     reply_deadline);
  }
  if (need_full_copy_ && !p.full_copy && !p.stream && !p.changed) {
    // The engine starts every session with a full copy (DISK.md §5.1): a
    // replicator that does not has lost track; tell it, keep the connection.
    return SendError(s,
                     Status::InvalidArgument("disk export '" + t_.name +
                                             "': the first PAUSE after attaching must be a full copy "
                                             "(nothing is logged before it)"),
                     reply_deadline);
  }
  uint64_t tag = 0;
  uint64_t regions = 0;
  if (p.full_copy || p.stream || p.changed) StopSync();  // an earlier session's copy: superseded
  if (p.changed) {
    // As the full copy, but only the regions written after `since` (the
    // backup holds the disk as of it). If the changes since are not known
    // the log is left alone and the replicator asks for a full copy.
    Result<uint64_t> held = AdvanceUnderHold("copy of the changed regions", [&] {
      Result<uint64_t> copied = t_.log->CaptureChangedSince(t_.clock->current(), t_.copy_store, p.since);
      if (copied.ok()) regions = *copied;
      return copied.status();
    });
    if (!held.ok()) {
      spdlog::info("disk export '{}': no copy of the changes since tag {}: {}", t_.name, p.since,
                   held.status().message());
      return SendError(s, held.status().With("disk export '" + t_.name + "'"), DeadlineIn(options_.reply_timeout));
    }
    tag = *held;
    streaming_ = false;
    spdlog::info("disk export '{}': copied the {} region(s) changed since tag {}", t_.name, regions, p.since);
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.changed_copies;
    stats_.changed_regions += regions;
  } else if (p.stream) {
    // The log starts empty with the next epoch; the copier's chunks, taken
    // under holds of their own, follow the guest's writes in it.
    Result<uint64_t> held = AdvanceUnderHold("starting the streaming copy", [&] { return Status::Ok(); });
    if (!held.ok()) return SendError(s, held.status(), reply_deadline);
    tag = *held;
    if (!sync_) sync_ = std::make_unique<SyncRunner>(t_.log, t_.clock, t_.copy_store, t_.nbd, options_.sync);
    const bool compared = backup != nullptr;
    sync_->Start(std::move(backup));
    streaming_ = true;
    copy_reported_ = false;
    copy_compared_ = compared;
    spdlog::info("disk export '{}': streaming copy of {} started{}", t_.name, t_.copy_store->size(),
                 compared ? ", leaving out the chunks the backup holds" : "");
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.streamed_copies;
  } else if (p.full_copy) {
    // The front end is held still for the copy: a request read meanwhile
    // waits, then is tagged with the next epoch (after the advance).
    uint64_t skipped = 0;
    Result<uint64_t> held = AdvanceUnderHold("full copy", [&] {
      Status copied = backup ? t_.log->CaptureUnlike(t_.clock->current(), t_.copy_store, 0, t_.copy_store->size(),
                                                     *backup, &skipped)
                             : t_.log->CaptureFullCopy(t_.clock->current(), t_.copy_store);
      if (copied.ok() && options_.during_full_copy) options_.during_full_copy();
      return copied;
    });
    if (!held.ok()) {
      spdlog::warn("disk export '{}': full copy failed: {}", t_.name, held.status().ToString());
      return SendError(s, held.status().With("disk export '" + t_.name + "'"), DeadlineIn(options_.reply_timeout));
    }
    tag = *held;
    if (backup) {
      spdlog::info("disk export '{}': full copy: {} of {} left out (the backup held them already)", t_.name,
                   skipped, t_.copy_store->size());
    }
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.full_copies;
    if (backup) {
      ++stats_.compared_copies;
      stats_.skipped_bytes += skipped;
    }
  } else {
    tag = t_.clock->Advance();
    if (streaming_) sync_->EpochAdvanced();
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.pauses;
  }
  uint8_t buf[tap::kPausedChangedSize];
  const size_t n = tap::EncodePaused(buf, tap::Paused{tag, p.changed, regions});
  // From now: a full copy of a large disk may have taken longer than the
  // reply timeout itself.
  return WriteMessage(s, tap::MsgType::kPaused, std::span<const uint8_t>(buf, n),
                      DeadlineIn(options_.reply_timeout));
}

// Every copy's first step, in one place: the front end held still (a
// request read meanwhile waits, then is tagged with the next epoch), the
// log emptied, `work` done with logging off, logging on again and the
// clock advanced: the new tag's records are exactly the writes after the
// copy. A failed hold or `work` leaves the log empty and a copy owed
// (nothing of this attachment may be sealed as whole until one succeeds).
Result<uint64_t> TapServer::AdvanceUnderHold(const char* what, const std::function<Status()>& work) {
  Status held = t_.nbd->Hold(DeadlineIn(options_.hold_timeout));
  if (!held.ok()) {
    need_full_copy_ = true;
    return held.With(what);
  }
  t_.gate->set_logging(false);
  t_.log->Reset();
  Status done = work();
  uint64_t tag = 0;
  if (done.ok()) {
    t_.gate->set_logging(true);
    tag = t_.clock->Advance();
  } else {
    t_.log->Reset();
  }
  t_.nbd->Unhold();
  if (!done.ok()) {
    need_full_copy_ = true;
    streaming_ = false;
    return done;
  }
  need_full_copy_ = false;
  last_sealed_ = 0;
  return tag;
}

Status TapServer::HandleSeal(transport::Stream* s, const tap::Seal& p) {
  const Deadline wait_deadline = DeadlineIn(std::chrono::milliseconds(p.timeout_ms));
  auto refuse = [&](Status why) { return SendError(s, why, DeadlineIn(options_.reply_timeout)); };
  if (need_full_copy_) {
    return refuse(Status::InvalidArgument("disk export '" + t_.name + "': SEAL before the attachment's full copy"));
  }
  if (p.tag >= t_.clock->current()) {
    return refuse(Status::InvalidArgument("disk export '" + t_.name + "': SEAL of tag " + std::to_string(p.tag) +
                                          ", which has not been paused (requests are tagged " +
                                          std::to_string(t_.clock->current()) + " now)"));
  }
  if (p.tag <= last_sealed_) {
    return refuse(Status::InvalidArgument("disk export '" + t_.name + "': tag " + std::to_string(p.tag) +
                                          " was sealed already (last sealed " + std::to_string(last_sealed_) + ")"));
  }
  // A request read before the pause may still be executing: its report
  // belongs to this epoch (DISK.md §3).
  Status drained = t_.clock->WaitDrained(p.tag, wait_deadline);
  if (!drained.ok()) return refuse(drained.With("disk export '" + t_.name + "'"));
  Status sealed = t_.log->Seal(p.tag);
  if (!sealed.ok()) {
    // The epoch could not be captured: the replicator ends its session and
    // starts the next with a full copy (which resets the log).
    need_full_copy_ = true;
    StopSync();
    return refuse(sealed.With("disk export '" + t_.name + "'"));
  }
  last_sealed_ = p.tag;
  uint32_t sync_state = protocol::kSyncWhole;
  if (streaming_) {
    Result<uint32_t> st = sync_->SyncStateAt(p.tag);
    if (!st.ok()) {
      // The copy cannot go on consistently (a read failed, the log broke):
      // the next session starts over.
      need_full_copy_ = true;
      StopSync();
      return refuse(st.status().With("disk export '" + t_.name + "'"));
    }
    sync_state = *st;
    if (sync_state == protocol::kSyncWhole && !sync_->active() && !copy_reported_ && copy_compared_) {
      copy_reported_ = true;
      spdlog::info("disk export '{}': streaming copy complete with tag {}: {} of {} left out (the backup held "
                   "them already)",
                   t_.name, p.tag, sync_->skipped_bytes(), sync_->walked_bytes());
    }
    sync_->Kick();
  }
  return SendRecords(s, p.tag, sync_state, DeadlineIn(options_.reply_timeout));
}

Status TapServer::SendRecords(transport::Stream* s, uint64_t tag, uint32_t sync_state, Deadline deadline) {
  digest_.Reset();
  builder_.Reset(0);
  uint64_t wire = 0;
  Status failed;
  // One std::function for the whole epoch (not one conversion per record).
  const std::function<Status()> flush = [&]() -> Status {
    if (builder_.empty()) return Status::Ok();
    std::span<const uint8_t> payload = builder_.payload();
    wire += tap::kHeaderSize + payload.size();
    Status st = WriteMessage(s, tap::MsgType::kRecords, payload, deadline).With("sending sealed records");
    builder_.Reset(0);
    return st;
  };
  // Plain over the local socket: the engine compresses for the wire.
  t_.log->ForEachSealed([&](const protocol::DiskRecord& r) {
    if (failed.ok()) failed = protocol::AddDiskRecordSplit(builder_, r, /*try_lz4=*/false, digest_, flush);
  });
  ROMULUS_RETURN_IF_ERROR(failed);
  ROMULUS_RETURN_IF_ERROR(flush());
  tap::Sealed end{tag, digest_.records(), digest_.data_bytes(), digest_.value(), streaming_, sync_state};
  uint8_t buf[tap::kSealedSyncSize];
  const size_t n = tap::EncodeSealed(buf, end);
  wire += tap::kHeaderSize + n;
  ROMULUS_RETURN_IF_ERROR(WriteMessage(s, tap::MsgType::kSealed, std::span<const uint8_t>(buf, n), deadline)
                              .With("sending SEALED"));
  std::lock_guard<std::mutex> lock(mu_);
  ++stats_.seals;
  stats_.records += end.record_count;
  stats_.data_bytes += end.data_bytes;
  stats_.wire_bytes += wire;
  return Status::Ok();
}

}  // namespace romulus::disk
