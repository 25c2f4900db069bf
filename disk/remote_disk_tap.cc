#include "disk/remote_disk_tap.h"

#include <algorithm>
#include <cstring>

#include <spdlog/spdlog.h>

#include "disk/export_socket.h"
#include "transport/fd_stream.h"

namespace romulus::disk {
namespace {

using transport::Deadline;
using transport::DeadlineIn;

std::string Str(uint64_t v) { return std::to_string(v); }

// The wire's allowance beyond the data budget: record heads, message headers.
uint64_t WireBudget(uint64_t data_budget) {
  return data_budget + std::max<uint64_t>(data_budget / 4, uint64_t{4} << 20);
}

}  // namespace

RemoteDiskTap::RemoteDiskTap(std::string path, RemoteDiskTapOptions options)
    : path_(std::move(path)), options_(options) {
  sealed_.reserve(1024);
}

RemoteDiskTap::~RemoteDiskTap() { Disconnect(); }

Result<std::unique_ptr<RemoteDiskTap>> RemoteDiskTap::Connect(const std::string& socket_path,
                                                              RemoteDiskTapOptions options) {
  if (options.budget_bytes == 0) return Status::InvalidArgument("disk tap: the budget must be positive");
  std::unique_ptr<RemoteDiskTap> t(new RemoteDiskTap(socket_path, options));
  ROMULUS_RETURN_IF_ERROR(t->Open());
  return t;
}

void RemoteDiskTap::Disconnect() {
  if (stream_) {
    stream_->Shutdown();
    stream_->Close();
    stream_.reset();
  }
  if (broken_.ok()) broken_ = Status::Closed("disk tap " + path_ + ": disconnected");
}

Status RemoteDiskTap::Break(Status st) {
  if (broken_.ok()) broken_ = st;
  // Closed, not just shut down locally: the export must see the connection
  // end (and detach) even when it is blocked writing records we will not read.
  if (stream_) {
    stream_->Shutdown();
    stream_->Close();
    stream_.reset();
  }
  return st;
}

Status RemoteDiskTap::Open() {
  Disconnect();
  auto fd = ConnectUnix(path_, "disk tap socket");
  if (!fd.ok()) return broken_ = fd.status();
  auto opened = transport::OpenFdStream(*fd, *fd, "disk tap " + path_, true);
  if (!opened.ok()) {
    ::close(*fd);
    return broken_ = opened.status();
  }
  stream_ = std::move(*opened);
  broken_ = Status::Ok();
  auto hdr = ReadMessage(DeadlineIn(options_.connect_timeout));
  if (!hdr.ok()) return Break(hdr.status().With("disk tap " + path_ + ": waiting for the export's HELLO"));
  if (hdr->type == tap::MsgType::kError) {
    // Refused (another replicator attached, wrong uid): say the export's words.
    return Break(RemoteError(std::span<const uint8_t>(rx_.data(), hdr->length)).With("disk tap " + path_));
  }
  if (hdr->type != tap::MsgType::kHello) {
    return Break(Status::Corruption("disk tap " + path_ + ": the export sent " + tap::MsgTypeName(hdr->type) +
                                    " instead of HELLO"));
  }
  auto hello = tap::DecodeHello(std::span<const uint8_t>(rx_.data(), hdr->length));
  if (!hello.ok()) return Break(hello.status().With("disk tap " + path_));
  if (stats_.connects > 0) {
    // Reconnected: the same disk, or nothing.
    if (hello->disk_size != hello_.disk_size || hello->name != hello_.name) {
      return Break(Status::InvalidArgument("disk tap " + path_ + ": the export now serves '" + hello->name + "' (" +
                                           Str(hello->disk_size) + " bytes), not '" + hello_.name + "' (" +
                                           Str(hello_.disk_size) + " bytes)"));
    }
    if (hello->instance_id != hello_.instance_id) {
      // The old instance's tags mean nothing to this one.
      ack_pending_.store(0, std::memory_order_relaxed);
      ++stats_.export_restarts;
      spdlog::warn("disk tap {}: the export of '{}' restarted since the last connection", path_, hello->name);
    }
  }
  hello_ = std::move(*hello);
  ack_sent_ = 0;  // tell this connection again
  export_floor_.store(0, std::memory_order_relaxed);  // asked (FLOOR?) by Refresh
  info_.id = options_.disk_id;
  info_.size_bytes = hello_.disk_size;
  info_.name = hello_.name;
  ++stats_.connects;
  spdlog::info("disk tap {}: attached to export '{}' ({} bytes, instance {:016x})", path_, hello_.name,
               hello_.disk_size, hello_.instance_id);
  return Status::Ok();
}

Status RemoteDiskTap::Send(tap::MsgType type, std::span<const uint8_t> payload, Deadline deadline) {
  uint8_t header[tap::kHeaderSize];
  tap::EncodeHeader(header, type, static_cast<uint32_t>(payload.size()));
  std::span<const uint8_t> parts[2] = {header, payload};
  Status st = stream_->WriteAllV(parts, deadline);
  if (!st.ok()) return Break(st.With("disk tap " + path_ + ": sending " + tap::MsgTypeName(type)));
  return st;
}

Result<tap::Header> RemoteDiskTap::ReadMessage(Deadline deadline) {
  uint8_t hdr[tap::kHeaderSize];
  ROMULUS_RETURN_IF_ERROR(stream_->ReadExact(hdr, deadline));
  auto h = tap::DecodeHeader(std::span<const uint8_t, tap::kHeaderSize>(hdr));
  if (!h.ok()) return h.status();
  if (h->type == tap::MsgType::kPause || h->type == tap::MsgType::kSeal || h->type == tap::MsgType::kAcked ||
      h->type == tap::MsgType::kDigests || h->type == tap::MsgType::kFloorQuery) {
    return Status::Corruption(std::string("the export sent ") + tap::MsgTypeName(h->type) +
                              ", which only the replicator sends");
  }
  // Bounded by the type (DecodeHeader): at most one RECORDS payload, 8 MiB.
  if (rx_.size() < h->length) {
    rx_.resize(std::max<size_t>(h->length, std::min<size_t>(rx_.size() * 2, tap::kMaxRecordsPayload)));
    ++stats_.reallocations;
  }
  ROMULUS_RETURN_IF_ERROR(stream_->ReadExact(std::span<uint8_t>(rx_.data(), h->length), deadline));
  return h;
}

Status RemoteDiskTap::RemoteError(std::span<const uint8_t> payload) {
  auto e = tap::DecodeError(payload);
  if (!e.ok()) return e.status();
  return Status::Error(e->code, "the export says: " + e->text);
}

void RemoteDiskTap::Acked(uint64_t tag) {
  uint64_t seen = ack_pending_.load(std::memory_order_relaxed);
  while (seen < tag && !ack_pending_.compare_exchange_weak(seen, tag, std::memory_order_relaxed)) {
  }
}

void RemoteDiskTap::Refresh() {
  bool alive = false;
  if (connected()) {
    // Nothing is due from the export between our requests: a readable
    // connection is one the export closed (it restarted, or detached us) or
    // one it misuses. Silent means alive.
    uint8_t b = 0;
    auto r = stream_->ReadSome(std::span<uint8_t>(&b, 1), transport::Clock::now());
    alive = !r.ok() && r.status().code() == Code::kTimeout;
    if (!alive) {
      (void)Break(r.ok() ? Status::Corruption("disk tap " + path_ + ": the export sent bytes between requests")
                         : r.status().With("disk tap " + path_));
    }
  }
  // A kept connection the export dropped just now (its idle timeout) fails
  // the question: then once more on a new one, as a broken one.
  Status st = alive ? QueryFloor() : Status::Closed("disk tap " + path_ + ": not connected");
  if (!st.ok()) {
    st = Open();
    if (st.ok()) st = QueryFloor();
  }
  if (!st.ok()) spdlog::warn("disk tap {}: {} (the session's first pause tries again)", path_, st.ToString());
}

Status RemoteDiskTap::QueryFloor() {
  if ((hello_.features & tap::kFeatureFloor) == 0 || lineage() == 0) return Status::Ok();
  const Deadline deadline = DeadlineIn(options_.pause_timeout);
  ROMULUS_RETURN_IF_ERROR(Send(tap::MsgType::kFloorQuery, {}, deadline));
  auto hdr = ReadMessage(deadline);
  if (!hdr.ok()) return Break(hdr.status().With("disk tap " + path_ + ": waiting for FLOOR"));
  std::span<const uint8_t> body(rx_.data(), hdr->length);
  if (hdr->type == tap::MsgType::kError) return Break(RemoteError(body).With("disk tap " + path_ + ": FLOOR?"));
  if (hdr->type != tap::MsgType::kFloor) {
    return Break(Status::Corruption("disk tap " + path_ + ": the export answered FLOOR? with " +
                                    tap::MsgTypeName(hdr->type)));
  }
  auto floor = tap::DecodeFloor(body);
  if (!floor.ok()) return Break(floor.status().With("disk tap " + path_));
  export_floor_.store(*floor, std::memory_order_relaxed);
  return Status::Ok();
}

Result<uint64_t> RemoteDiskTap::Pause(CopyMode copy, uint64_t since, uint64_t lineage,
                                      std::shared_ptr<const protocol::DiskChunkTable> backup) {
  const bool full_copy = copy == CopyMode::kInPause;
  const bool stream = copy == CopyMode::kStream;
  const bool changed = copy == CopyMode::kChanged;
  if (!connected()) {
    // A session starts with a copy: the moment to come back.
    if (copy == CopyMode::kNone) return broken_.ok() ? Status::Closed("disk tap " + path_ + ": not connected") : broken_;
    ROMULUS_RETURN_IF_ERROR(Open());
  }
  if (stream && !can_stream()) {
    return Status::Unsupported("disk tap " + path_ + ": export '" + hello_.name +
                               "' cannot stream its copy (an older romulus disk-export)");
  }
  if (changed && this->lineage() == 0) {
    return Status::Unsupported("disk tap " + path_ + ": export '" + hello_.name +
                               "' does not track its changes (an older romulus disk-export)");
  }
  // A copy's PAUSE may wait for the export to stop an earlier copy and to
  // hold its front end: the longer bound.
  const Deadline deadline = DeadlineIn(copy != CopyMode::kNone ? options_.full_copy_timeout : options_.pause_timeout);
  const uint64_t ack = ack_pending_.load(std::memory_order_relaxed);
  if (ack > ack_sent_ && this->lineage() != 0) {
    uint8_t a[tap::kAckedSize];
    tap::EncodeAcked(a, ack);
    ROMULUS_RETURN_IF_ERROR(Send(tap::MsgType::kAcked, a, deadline));
    ack_sent_ = ack;
  }
  sealed_sync_state_ = protocol::kSyncWhole;
  if (copy != CopyMode::kNone) streaming_ = stream;
  if (backup && (full_copy || stream) && can_compare() && backup->size() == protocol::DiskChunks(hello_.disk_size)) {
    // The backup's table, whole, right before the copy PAUSE that uses it.
    tap::Digests d;
    std::vector<uint8_t> msg(tap::MaxPayload(tap::MsgType::kDigests));
    for (uint64_t at = 0; at < backup->size();) {
      const uint64_t n = std::min<uint64_t>(tap::kMaxDigestsPerMessage, backup->size() - at);
      d.first_chunk = at;
      d.hashes.assign(backup->begin() + static_cast<std::ptrdiff_t>(at),
                      backup->begin() + static_cast<std::ptrdiff_t>(at + n));
      at += n;
      d.last = at == backup->size();
      const size_t len = tap::EncodeDigests(d, msg);
      ROMULUS_RETURN_IF_ERROR(Send(tap::MsgType::kDigests, std::span<const uint8_t>(msg.data(), len), deadline));
    }
  }
  uint8_t buf[tap::kPauseChangedSize];
  const size_t n = tap::EncodePause(buf, tap::Pause{full_copy, stream, changed, since, lineage});
  ROMULUS_RETURN_IF_ERROR(Send(tap::MsgType::kPause, std::span<const uint8_t>(buf, n), deadline));
  auto hdr = ReadMessage(deadline);
  if (!hdr.ok()) return Break(hdr.status().With("disk tap " + path_ + ": waiting for PAUSED"));
  std::span<const uint8_t> body(rx_.data(), hdr->length);
  if (hdr->type == tap::MsgType::kError) {
    auto e = tap::DecodeError(body);
    if (!e.ok()) return Break(e.status().With("disk tap " + path_ + ": ERROR answering PAUSE"));
    return RemoteError(body).With("disk tap " + path_ + ": PAUSE");
  }
  if (hdr->type != tap::MsgType::kPaused) {
    return Break(Status::Corruption("disk tap " + path_ + ": the export answered PAUSE with " +
                                    tap::MsgTypeName(hdr->type)));
  }
  auto p = tap::DecodePaused(body);
  if (!p.ok()) return Break(p.status().With("disk tap " + path_));
  if (p->with_regions != changed) {
    return Break(Status::Corruption("disk tap " + path_ + ": PAUSED " +
                                    (changed ? "without" : "with") + " a region count"));
  }
  copied_regions_ = p->regions;
  return p->tag;
}

Status RemoteDiskTap::Seal(uint64_t tag, std::chrono::steady_clock::time_point deadline) {
  if (!connected()) return broken_.ok() ? Status::Closed("disk tap " + path_ + ": not connected") : broken_;
  const auto now = std::chrono::steady_clock::now();
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now).count();
  tap::Seal s;
  s.tag = tag;
  s.timeout_ms = static_cast<uint32_t>(std::clamp<int64_t>(left, 1, tap::kMaxSealTimeoutMs));
  uint8_t buf[tap::kSealSize];
  tap::EncodeSeal(buf, s);
  const Deadline rx_deadline = std::max(deadline, now) + options_.transfer_timeout;
  ROMULUS_RETURN_IF_ERROR(Send(tap::MsgType::kSeal, buf, rx_deadline));
  // Nothing of a failed Seal is yielded.
  sealed_.clear();
  sealed_data_.clear();
  Status st = Receive(tag, rx_deadline);
  if (!st.ok()) {
    sealed_.clear();
    sealed_data_.clear();
  }
  return st;
}

Status RemoteDiskTap::Receive(uint64_t tag, Deadline deadline) {
  const protocol::DiskInfo wire_disk{0, hello_.disk_size, hello_.name};
  digest_.Reset();
  uint64_t wire = 0;
  const uint64_t wire_budget = WireBudget(options_.budget_bytes);
  for (;;) {
    auto hdr = ReadMessage(deadline);
    if (!hdr.ok()) return Break(hdr.status().With("disk tap " + path_ + ": receiving the records of tag " + Str(tag)));
    std::span<const uint8_t> body(rx_.data(), hdr->length);
    wire += tap::kHeaderSize + hdr->length;
    switch (hdr->type) {
      case tap::MsgType::kError: {
        // Before any record: the export refused (requests still in flight,
        // the epoch over its budget…); the connection stays in step.
        auto decoded = tap::DecodeError(body);
        if (!decoded.ok()) return Break(decoded.status().With("disk tap " + path_ + ": ERROR answering SEAL"));
        Status e = RemoteError(body);
        if (!sealed_.empty() || digest_.records() > 0) {
          return Break(Status::Corruption("disk tap " + path_ + ": ERROR in the middle of an epoch's records: " +
                                          e.ToString()));
        }
        return e.With("disk tap " + path_ + ": SEAL of tag " + Str(tag));
      }
      case tap::MsgType::kRecords: {
        if (wire > wire_budget) {
          return Break(Status::OutOfRange("disk tap " + path_ + ": the records of tag " + Str(tag) + " exceed " +
                                          Str(wire_budget) + " bytes on the tap; the backup needs a resync"));
        }
        Status opened = parser_.Open(body, std::span<const protocol::DiskInfo>(&wire_disk, 1));
        if (!opened.ok()) return Break(opened.With("disk tap " + path_ + ": RECORDS of tag " + Str(tag)));
        protocol::DiskRecord r;
        while (parser_.Next(&r)) {
          size_t at = sealed_data_.size();
          if (r.kind == protocol::DiskRecordKind::kWrite) {
            if (at + r.data.size() > options_.budget_bytes) {
              return Break(Status::OutOfRange("disk tap " + path_ + ": the writes of tag " + Str(tag) +
                                              " exceed the budget of " + Str(options_.budget_bytes) +
                                              " bytes; the backup needs a resync"));
            }
            if (at + r.data.size() > sealed_data_.capacity()) {
              size_t want = std::max<size_t>(sealed_data_.capacity() * 2, at + r.data.size());
              want = std::max<size_t>(want, size_t{1} << 20);
              sealed_data_.reserve(std::min<uint64_t>(want, options_.budget_bytes));
              ++stats_.reallocations;
            }
            sealed_data_.insert(sealed_data_.end(), r.data.begin(), r.data.end());
          }
          if (sealed_.size() == sealed_.capacity()) ++stats_.reallocations;
          sealed_.push_back(Entry{r.kind, r.flags, r.offset, r.length, at});
          digest_.Add(r);
        }
        break;
      }
      case tap::MsgType::kSealed: {
        auto end = tap::DecodeSealed(body);
        if (!end.ok()) return Break(end.status().With("disk tap " + path_));
        if (end->tag != tag || end->record_count != digest_.records() || end->data_bytes != digest_.data_bytes() ||
            end->digest != digest_.value()) {
          return Break(Status::Corruption(
              "disk tap " + path_ + ": SEALED of tag " + Str(end->tag) + " says " + Str(end->record_count) +
              " records, " + Str(end->data_bytes) + " bytes, digest " + Str(end->digest) + "; received for tag " +
              Str(tag) + ": " + Str(digest_.records()) + " records, " + Str(digest_.data_bytes()) +
              " bytes, digest " + Str(digest_.value())));
        }
        if (end->with_sync != streaming_) {
          // A streamed copy is whole only when the export says so.
          return Break(Status::Corruption("disk tap " + path_ + ": SEALED of tag " + Str(end->tag) +
                                          (streaming_ ? " lacks the sync state of a streaming copy"
                                                      : " carries a sync state, but no copy is streamed")));
        }
        sealed_sync_state_ = end->with_sync ? end->sync_state : protocol::kSyncWhole;
        ++stats_.seals;
        stats_.records += end->record_count;
        stats_.data_bytes += end->data_bytes;
        stats_.wire_bytes += wire;
        return Status::Ok();
      }
      default:
        return Break(Status::Corruption("disk tap " + path_ + ": the export answered SEAL with " +
                                        tap::MsgTypeName(hdr->type)));
    }
  }
}

void RemoteDiskTap::ForEachSealed(const std::function<void(const protocol::DiskRecord&)>& fn) const {
  for (const Entry& e : sealed_) {
    protocol::DiskRecord r;
    r.kind = e.kind;
    r.flags = e.flags;
    r.offset = e.offset;
    r.length = e.length;
    if (e.kind == protocol::DiskRecordKind::kWrite) {
      r.data = std::span<const uint8_t>(sealed_data_.data() + e.data_at, e.length);
    }
    fn(r);
  }
}

}  // namespace romulus::disk
