#include "disk/epoch_disk_log.h"

#include <algorithm>
#include <cstring>
#include <utility>

namespace romulus::disk {

namespace {

using protocol::DiskRecordKind;

constexpr uint64_t kSector = 512;
constexpr uint64_t kBlock = 4096;

bool AllZero(std::span<const uint8_t> b) {
  // Word at a time: this runs on the guest's I/O path.
  size_t i = 0;
  for (; i + 8 <= b.size(); i += 8) {
    uint64_t w;
    std::memcpy(&w, b.data() + i, 8);
    if (w != 0) return false;
  }
  for (; i < b.size(); ++i) {
    if (b[i] != 0) return false;
  }
  return true;
}

}  // namespace

EpochDiskLog::EpochDiskLog(uint32_t disk_id, BackingStore* store, EpochDiskLogOptions options)
    : disk_id_(disk_id), store_(store), options_(options) {
  // Entries are small; a modest reserve keeps the common epoch from growing them.
  std::lock_guard<std::mutex> lk(mu_);
  open_.reserve(1024);
  sealed_.reserve(1024);
}

void EpochDiskLog::LostLocked(uint64_t epoch, std::string why) {
  if (lost_epoch_ == 0 || epoch < lost_epoch_) {
    lost_epoch_ = epoch;
    lost_why_ = std::move(why);
  }
}

void EpochDiskLog::AppendLocked(uint64_t epoch, DiskRecordKind kind, uint8_t flags, uint64_t offset,
                                uint64_t length, std::span<const uint8_t> data) {
  if (lost_epoch_ != 0) return;  // the session needs a resync: keeping more is pointless
  const size_t at = open_data_.size();
  if (!data.empty()) {
    if (at + data.size() > options_.budget_bytes) {
      LostLocked(epoch, "disk " + std::to_string(disk_id_) + ": the writes of epoch " + std::to_string(epoch) +
                            " exceed the disk log's budget of " + std::to_string(options_.budget_bytes) +
                            " bytes; the backup needs a resync of the disk");
      return;
    }
    if (at + data.size() > open_data_.capacity()) {
      size_t want = std::max<size_t>(open_data_.capacity() * 2, at + data.size());
      want = std::max<size_t>(want, size_t{1} << 20);
      open_data_.reserve(std::min<uint64_t>(want, options_.budget_bytes));
      ++stats_.reallocations;
    }
    open_data_.insert(open_data_.end(), data.begin(), data.end());
    stats_.write_bytes += data.size();
    stats_.high_water = std::max<uint64_t>(stats_.high_water, open_data_.size());
  }
  if (open_.size() == open_.capacity()) ++stats_.reallocations;
  open_.push_back(Entry{epoch, kind, flags, offset, length, at});
  ++stats_.records;
}

void EpochDiskLog::OnWrite(uint64_t epoch, uint64_t offset, std::span<const uint8_t> bytes, bool fua) {
  if (bytes.empty()) return;
  if (offset % kSector != 0 || bytes.size() % kSector != 0) {
    // The wire carries whole sectors: re-read the sectors around it (the
    // store holds exactly this write's result now, see OnWriteFailed).
    OnWriteFailed(epoch, offset, bytes.size());
    return;
  }
  const uint8_t flags = fua ? protocol::kDiskFlagFua : 0;
  std::lock_guard<std::mutex> lk(mu_);
  MarkLocked(epoch, offset, bytes.size());
  if (AllZero(bytes)) {
    ++stats_.zero_writes;
    AppendLocked(epoch, DiskRecordKind::kZero, flags, offset, bytes.size(), {});
    return;
  }
  AppendLocked(epoch, DiskRecordKind::kWrite, flags, offset, bytes.size(), bytes);
}

void EpochDiskLog::OnZero(uint64_t epoch, uint64_t offset, uint64_t length, bool trim, bool fua) {
  if (length == 0) return;
  if (offset % kSector != 0 || length % kSector != 0) {
    OnWriteFailed(epoch, offset, length);
    return;
  }
  uint8_t flags = (fua ? protocol::kDiskFlagFua : 0) | (trim ? protocol::kDiskFlagTrim : 0);
  std::lock_guard<std::mutex> lk(mu_);
  MarkLocked(epoch, offset, length);
  AppendLocked(epoch, DiskRecordKind::kZero, flags, offset, length, {});
}

void EpochDiskLog::OnFlush(uint64_t epoch) {
  std::lock_guard<std::mutex> lk(mu_);
  AppendLocked(epoch, DiskRecordKind::kFlush, 0, 0, 0, {});
}

void EpochDiskLog::OnWriteFailed(uint64_t epoch, uint64_t offset, uint64_t length) {
  // Widened to whole sectors, clipped to the disk.
  uint64_t begin = offset / kSector * kSector;
  uint64_t end = offset + length;
  end = (end + kSector - 1) / kSector * kSector;
  if (store_ != nullptr) end = std::min(end, store_->size());
  {
    // Changed, whatever the re-read finds.
    std::lock_guard<std::mutex> lk(mu_);
    MarkLocked(epoch, offset, length);
  }
  if (store_ == nullptr || begin >= end) {
    std::lock_guard<std::mutex> lk(mu_);
    LostLocked(epoch, "disk " + std::to_string(disk_id_) + ": a failed write at " + std::to_string(offset) +
                          " left its range unknown and there is no store to re-read it from");
    return;
  }
  // Read now, on the front end's thread, before the request's tag is
  // released: nothing of a later epoch can be in the store yet.
  uint64_t pos = begin;
  while (pos < end) {
    uint32_t n = static_cast<uint32_t>(std::min<uint64_t>(end - pos, std::min<uint64_t>(store_->max_request(), protocol::kMaxDiskWriteChunk)));
    Result<std::span<const uint8_t>> data = store_->Read(pos, n);
    std::lock_guard<std::mutex> lk(mu_);
    if (!data.ok()) {
      LostLocked(epoch, "disk " + std::to_string(disk_id_) + ": a failed write at " + std::to_string(offset) +
                            " could not be re-read (" + data.status().ToString() + ")");
      return;
    }
    ++stats_.failed_rereads;
    if (AllZero(*data)) {
      AppendLocked(epoch, DiskRecordKind::kZero, 0, pos, n, {});
    } else {
      AppendLocked(epoch, DiskRecordKind::kWrite, 0, pos, n, *data);
    }
    pos += n;
  }
}

void EpochDiskLog::Reset() {
  std::lock_guard<std::mutex> lk(mu_);
  ResetLocked();
}

void EpochDiskLog::ResetLocked() {
  open_.clear();
  open_data_.clear();
  lost_epoch_ = 0;
  lost_why_.clear();
  sealed_.clear();
  sealed_data_.clear();
}

void EpochDiskLog::AppendZeroRunLocked(uint64_t epoch, uint64_t from, uint64_t to) {
  // Bounded by the wire's ZERO record length.
  while (from < to) {
    uint64_t len = std::min<uint64_t>(to - from, protocol::kMaxDiskZeroChunk);
    AppendLocked(epoch, DiskRecordKind::kZero, 0, from, len, {});
    from += len;
  }
}

// Runs of zero blocks become one ZERO record, runs of data one WRITE; a
// zero run may span calls (the full copy's chunks) and is closed by Finish.
struct EpochDiskLog::CaptureCursor {
  bool in_zero = false;
  uint64_t zero_from = 0;
};

Status EpochDiskLog::CaptureChunk(uint64_t epoch, BackingStore* store, uint64_t pos, uint32_t n, CaptureCursor& c,
                                  const char* what) {
  Result<std::span<const uint8_t>> data = store->Read(pos, n);
  if (!data.ok()) return data.status().With("disk " + std::to_string(disk_id_) + ": reading for the " + what);
  return CaptureData(epoch, pos, *data, c, what);
}

Status EpochDiskLog::CaptureData(uint64_t epoch, uint64_t pos, std::span<const uint8_t> bytes, CaptureCursor& c,
                                 const char* what) {
  const uint64_t n = bytes.size();
  std::lock_guard<std::mutex> lk(mu_);
  uint64_t run_at = 0;
  bool run_data = false;
  for (uint64_t b = 0; b < n; b += kBlock) {
    const uint64_t len = std::min<uint64_t>(kBlock, n - b);
    const bool zero = AllZero(bytes.subspan(b, len));
    if (zero) {
      if (run_data) AppendLocked(epoch, DiskRecordKind::kWrite, 0, pos + run_at, b - run_at, bytes.subspan(run_at, b - run_at));
      run_data = false;
      if (!c.in_zero) {
        c.in_zero = true;
        c.zero_from = pos + b;
      }
    } else {
      if (c.in_zero) AppendZeroRunLocked(epoch, c.zero_from, pos + b);
      c.in_zero = false;
      if (!run_data) {
        run_data = true;
        run_at = b;
      }
    }
  }
  if (run_data) AppendLocked(epoch, DiskRecordKind::kWrite, 0, pos + run_at, n - run_at, bytes.subspan(run_at, n - run_at));
  if (lost_epoch_ != 0) return Status::OutOfRange(lost_why_ + " (" + what + ")");
  return Status::Ok();
}

Status EpochDiskLog::CaptureFinish(uint64_t epoch, uint64_t end, CaptureCursor& c, const char* what) {
  std::lock_guard<std::mutex> lk(mu_);
  if (c.in_zero) AppendZeroRunLocked(epoch, c.zero_from, end);
  c.in_zero = false;
  if (lost_epoch_ != 0) return Status::OutOfRange(lost_why_ + " (" + what + ")");
  return Status::Ok();
}

uint64_t EpochDiskLog::CaptureChunkBytes(const BackingStore& store) {
  return std::min<uint64_t>(store.max_request(), protocol::kMaxDiskWriteChunk) / kBlock * kBlock;
}

Status EpochDiskLog::CaptureSpan(uint64_t epoch, BackingStore* store, uint64_t offset, uint64_t length,
                                 const char* what) {
  const uint64_t chunk = CaptureChunkBytes(*store);
  CaptureCursor c;
  for (uint64_t pos = offset; pos < offset + length;) {
    // A hole reads as zeros: it joins the zero run without being read.
    const uint64_t data_at = std::min(store->DataFrom(pos), offset + length);
    if (data_at > pos) {
      std::lock_guard<std::mutex> lk(mu_);
      if (!c.in_zero) {
        c.in_zero = true;
        c.zero_from = pos;
      }
      pos = data_at;
      continue;
    }
    const uint32_t n = static_cast<uint32_t>(std::min<uint64_t>(offset + length - pos, chunk));
    ROMULUS_RETURN_IF_ERROR(CaptureChunk(epoch, store, pos, n, c, what));
    pos += n;
  }
  return CaptureFinish(epoch, offset + length, c, what);
}

Status EpochDiskLog::CaptureUnlike(uint64_t epoch, BackingStore* store, uint64_t offset, uint64_t length,
                                   const protocol::DiskChunkTable& backup, uint64_t* skipped) {
  if (store == nullptr) return Status::InvalidArgument("disk copy without a store");
  const uint64_t size = store->size();
  if (offset > size || length > size - offset || offset % protocol::kDiskChunkBytes != 0 ||
      backup.size() != protocol::DiskChunks(size)) {
    return Status::InvalidArgument("disk " + std::to_string(disk_id_) + ": comparing copy of " +
                                   std::to_string(length) + " bytes at " + std::to_string(offset) + " against " +
                                   std::to_string(backup.size()) + " chunk hashes of a " + std::to_string(size) +
                                   "-byte disk");
  }
  const char* what = "copy of what the backup lacks";
  const uint64_t end = offset + length;
  for (uint64_t pos = offset; pos < end;) {
    const uint64_t n = std::min(protocol::kDiskChunkBytes, size - pos);
    const uint64_t until = std::min(end, pos + n);  // a range may end inside its last chunk
    const protocol::ChunkHash& theirs = backup[pos / protocol::kDiskChunkBytes];
    if (store->DataFrom(pos) >= pos + n) {
      // A hole reads as zeros without being read.
      if (theirs == protocol::ZeroChunkHash(n)) {
        *skipped += until - pos;
      } else {
        ROMULUS_RETURN_IF_ERROR(CaptureSpan(epoch, store, pos, until - pos, what));
      }
      pos = until;
      continue;
    }
    if (n > store->max_request()) {
      // Cannot be hashed in one read: copied as it is.
      ROMULUS_RETURN_IF_ERROR(CaptureSpan(epoch, store, pos, until - pos, what));
      pos = until;
      continue;
    }
    Result<std::span<const uint8_t>> data = store->Read(pos, static_cast<uint32_t>(n));
    if (!data.ok()) return data.status().With("disk " + std::to_string(disk_id_) + ": reading for the " + what);
    if (protocol::DiskChunkHash(*data) == theirs) {
      *skipped += until - pos;
    } else {
      // Records of at most kMaxDiskWriteChunk each, as CaptureSpan makes.
      const uint64_t piece = CaptureChunkBytes(*store);
      CaptureCursor c;
      for (uint64_t at = pos; at < until; at += std::min(piece, until - at)) {
        ROMULUS_RETURN_IF_ERROR(CaptureData(epoch, at, data->subspan(at - pos, std::min(piece, until - at)), c, what));
      }
      ROMULUS_RETURN_IF_ERROR(CaptureFinish(epoch, until, c, what));
    }
    pos = until;
  }
  return Status::Ok();
}

Status EpochDiskLog::CaptureFullCopy(uint64_t epoch, BackingStore* store) {
  if (store == nullptr) return Status::InvalidArgument("disk full copy without a store");
  return CaptureSpan(epoch, store, 0, store->size(), "full copy");
}

Status EpochDiskLog::CaptureRange(uint64_t epoch, BackingStore* store, uint64_t offset, uint64_t length) {
  if (store == nullptr) return Status::InvalidArgument("disk copy without a store");
  if (offset > store->size() || length > store->size() - offset) {
    return Status::InvalidArgument("disk " + std::to_string(disk_id_) + ": copy of " + std::to_string(length) +
                                   " bytes at " + std::to_string(offset) + " is beyond the disk's " +
                                   std::to_string(store->size()) + " bytes");
  }
  return CaptureSpan(epoch, store, offset, length, "sync copy");
}

void EpochDiskLog::TrackChanges(uint64_t disk_bytes) {
  std::lock_guard<std::mutex> lk(mu_);
  changes_ = std::make_unique<DirtyRegions>(disk_bytes);
}

bool EpochDiskLog::ChangesKnownSince(uint64_t since) const {
  std::lock_guard<std::mutex> lk(mu_);
  return changes_ != nullptr && since >= changes_->forgotten_through();
}

uint64_t EpochDiskLog::changes_forgotten_through() const {
  std::lock_guard<std::mutex> lk(mu_);
  return changes_ != nullptr ? changes_->forgotten_through() : 0;
}

void EpochDiskLog::MarkChanged(uint64_t tag, uint64_t offset, uint64_t length) {
  std::lock_guard<std::mutex> lk(mu_);
  MarkLocked(tag, offset, length);
}

void EpochDiskLog::ForgetChangesThrough(uint64_t tag) {
  std::lock_guard<std::mutex> lk(mu_);
  if (changes_) changes_->Forget(tag);
}

Result<uint64_t> EpochDiskLog::CaptureChangedSince(uint64_t epoch, BackingStore* store, uint64_t since) {
  if (store == nullptr) return Status::InvalidArgument("disk copy without a store");
  // One bitmap copied under the mutex (2 MiB for 1 TiB), the ranges walked
  // outside it: never a list of every range.
  std::optional<RegionSet> changed;
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (changes_ == nullptr) return Status::Unsupported("disk " + std::to_string(disk_id_) + ": changes are not tracked");
    changed = changes_->ChangedSetSince(since);
    if (!changed) {
      return Status::Unsupported("disk " + std::to_string(disk_id_) + ": changes since tag " + std::to_string(since) +
                              " are no longer known (kept from tag " +
                              std::to_string(changes_->forgotten_through()) + ")");
    }
    ResetLocked();
  }
  uint64_t cursor = 0;
  std::pair<uint64_t, uint64_t> range;
  while (changed->Next(&cursor, &range)) {
    const auto [offset, length] = range;
    if (offset > store->size() || length > store->size() - offset) {
      return Status::Internal("disk " + std::to_string(disk_id_) + ": a changed region lies beyond the store");
    }
    ROMULUS_RETURN_IF_ERROR(CaptureSpan(epoch, store, offset, length, "copy of the changed regions"));
  }
  return changed->count();
}

uint64_t EpochDiskLog::open_bytes() const {
  std::lock_guard<std::mutex> lk(mu_);
  return open_data_.size();
}

Status EpochDiskLog::Seal(uint64_t epoch) {
  std::lock_guard<std::mutex> lk(mu_);
  if (lost_epoch_ != 0 && lost_epoch_ <= epoch) return Status::OutOfRange(lost_why_);
  // Tags are non-decreasing in report order (one request at a time, tagged
  // when read), so epoch's records are a prefix of the open log.
  size_t p = 0;
  while (p < open_.size() && open_[p].epoch <= epoch) ++p;
  for (size_t i = p; i < open_.size(); ++i) {
    if (open_[i].epoch <= epoch) {
      return Status::Internal("disk " + std::to_string(disk_id_) + ": a record of epoch " +
                              std::to_string(open_[i].epoch) + " follows one of a later epoch");
    }
  }
  // The sealed arena takes the open one whole; what belongs to later
  // epochs (usually little: reported since the advance) moves back.
  sealed_.swap(open_);
  sealed_data_.swap(open_data_);
  open_.clear();
  open_data_.clear();
  for (size_t i = p; i < sealed_.size(); ++i) {
    Entry e = sealed_[i];
    if (e.kind == DiskRecordKind::kWrite) {
      const size_t at = open_data_.size();
      if (at + e.length > open_data_.capacity()) {
        open_data_.reserve(std::min<uint64_t>(std::max<size_t>(open_data_.capacity() * 2, at + e.length),
                                              options_.budget_bytes));
        ++stats_.reallocations;
      }
      open_data_.insert(open_data_.end(), sealed_data_.begin() + e.data_at,
                        sealed_data_.begin() + e.data_at + e.length);
      e.data_at = at;
    }
    open_.push_back(e);
  }
  sealed_.resize(p);
  return Status::Ok();
}

void EpochDiskLog::ForEachSealed(const std::function<void(const protocol::DiskRecord&)>& fn) const {
  for (const Entry& e : sealed_) {
    protocol::DiskRecord r;
    r.kind = e.kind;
    r.flags = e.flags;
    r.offset = e.offset;
    r.length = e.length;
    if (e.kind == DiskRecordKind::kWrite) r.data = std::span<const uint8_t>(sealed_data_.data() + e.data_at, e.length);
    fn(r);
  }
}

EpochDiskLogStats EpochDiskLog::stats() const {
  std::lock_guard<std::mutex> lk(mu_);
  return stats_;
}

}  // namespace romulus::disk
