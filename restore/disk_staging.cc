#include "restore/disk_staging.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <spdlog/spdlog.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "common/little_endian.h"
#include "common/positional_io.h"

namespace romulus::restore {

void EncodeDiskEntryHead(const DiskEntry& e, uint8_t* out) {
  StoreLE32(out, e.disk_id);
  out[4] = e.kind;
  out[5] = e.flags;
  out[6] = out[7] = 0;
  StoreLE64(out + 8, e.offset);
  StoreLE64(out + 16, e.length);
}

namespace {

// One home for reading an entry's head: the fields, and whether the kind
// and range can be an entry at all (nothing of a damaged section is trusted).
Status ParseDiskEntryHead(const uint8_t* p, DiskEntry* e) {
  e->disk_id = LoadLE32(p);
  e->kind = p[4];
  e->flags = p[5];
  e->offset = LoadLE64(p + 8);
  e->length = LoadLE64(p + 16);
  e->data = nullptr;
  if (e->kind == kDiskEntryFlush) {
    if (e->length != 0 || e->offset != 0) return Status::Corruption("disk section: a flush with a range");
  } else if (e->kind == kDiskEntryWrite) {
    // What Stage accepts (DiskEntryFromRecord), so a committed section is
    // never one its own replay refuses; and the file walk's window bound.
    if (e->length > protocol::kMaxDiskWriteChunk) {
      return Status::Corruption("disk section: a write of " + std::to_string(e->length) + " bytes (at most " +
                                std::to_string(protocol::kMaxDiskWriteChunk) + ")");
    }
  } else if (e->kind != kDiskEntryZero) {
    return Status::Corruption("disk section: unknown entry kind " + std::to_string(e->kind));
  }
  return Status::Ok();
}

}  // namespace

Status ForEachDiskEntry(std::span<const uint8_t> section, const DiskEntryFn& fn) {
  size_t pos = 0;
  while (pos < section.size()) {
    if (section.size() - pos < kDiskEntryHead) return Status::Corruption("disk section: truncated entry");
    DiskEntry e;
    ROMULUS_RETURN_IF_ERROR(ParseDiskEntryHead(section.data() + pos, &e));
    pos += kDiskEntryHead;
    if (e.kind == kDiskEntryWrite) {
      if (section.size() - pos < e.length) return Status::Corruption("disk section: truncated write");
      e.data = section.data() + pos;
      pos += e.length;
    }
    ROMULUS_RETURN_IF_ERROR(fn(e));
  }
  return Status::Ok();
}

Status ForEachDiskEntryInFile(int fd, uint64_t offset, uint64_t length, std::vector<uint8_t>* window,
                              const DiskEntryFn& fn, const std::string& what) {
  if (window->size() < kDiskSectionWindow) window->resize(kDiskSectionWindow);
  uint8_t* const w = window->data();
  uint64_t base = 0;  // section position of w[0]
  size_t have = 0;    // valid bytes in w
  uint64_t pos = 0;   // section position of the next entry
  // Makes w hold [pos, pos + need), need <= kDiskSectionWindow.
  auto hold = [&](size_t need) -> Status {
    if (pos + need <= base + have) return Status::Ok();
    const size_t keep = static_cast<size_t>(base + have - pos);
    std::memmove(w, w + (pos - base), keep);
    base = pos;
    have = keep;
    const size_t more = static_cast<size_t>(std::min<uint64_t>(window->size() - have, length - (base + have)));
    ROMULUS_RETURN_IF_ERROR(PreadAll(fd, w + have, more, offset + base + have, what));
    have += more;
    return Status::Ok();
  };
  while (pos < length) {
    if (length - pos < kDiskEntryHead) return Status::Corruption("disk section: truncated entry");
    ROMULUS_RETURN_IF_ERROR(hold(kDiskEntryHead));
    DiskEntry e;
    ROMULUS_RETURN_IF_ERROR(ParseDiskEntryHead(w + (pos - base), &e));
    uint64_t next = pos + kDiskEntryHead;
    if (e.kind == kDiskEntryWrite) {
      if (length - next < e.length) return Status::Corruption("disk section: truncated write");
      ROMULUS_RETURN_IF_ERROR(hold(kDiskEntryHead + static_cast<size_t>(e.length)));
      e.data = w + (next - base);
      next += e.length;
    }
    pos = next;
    ROMULUS_RETURN_IF_ERROR(fn(e));
  }
  return Status::Ok();
}

Result<DiskEntry> DiskEntryFromRecord(uint32_t disk_id, uint64_t disk_size, const protocol::DiskRecord& record) {
  DiskEntry e;
  e.disk_id = disk_id;
  e.flags = record.flags;
  if (record.kind == protocol::DiskRecordKind::kFlush) {
    e.kind = kDiskEntryFlush;
    return e;
  }
  const bool write = record.kind == protocol::DiskRecordKind::kWrite;
  if ((!write && record.kind != protocol::DiskRecordKind::kZero) || record.length == 0 ||
      (write && record.length > protocol::kMaxDiskWriteChunk) ||
      record.offset > disk_size || record.length > disk_size - record.offset ||
      (write && record.data.size() != record.length)) {
    return Status::Corruption("disk " + std::to_string(disk_id) + " record (kind " +
                              std::to_string(static_cast<unsigned>(record.kind)) + ") at " +
                              std::to_string(record.offset) + "+" + std::to_string(record.length) +
                              " does not fit the disk of " + std::to_string(disk_size) + " bytes");
  }
  e.kind = write ? kDiskEntryWrite : kDiskEntryZero;
  e.offset = record.offset;
  e.length = record.length;
  e.data = write ? record.data.data() : nullptr;
  return e;
}

Status ApplyDiskEntry(int fd, const DiskEntry& e, const std::string& what) {
  if (e.kind == kDiskEntryWrite) return PwriteAll(fd, e.data, static_cast<size_t>(e.length), e.offset, what);
  if (e.kind == kDiskEntryFlush) {
    if (::fdatasync(fd) != 0) return Status::StorageErrno(what + ": flush (fdatasync)", errno);
    return Status::Ok();
  }
  // The range must read as zeros: a hole where the filesystem punches (no
  // space needed), else zero-range, else plain zero writes.
  const off_t off = static_cast<off_t>(e.offset), len = static_cast<off_t>(e.length);
  if (::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len) == 0) return Status::Ok();
  if (errno != EOPNOTSUPP) return Status::StorageErrno(what + ": punching", errno);
  if (::fallocate(fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, off, len) == 0) return Status::Ok();
  static const std::vector<uint8_t> zeros(1 << 20, 0);
  for (uint64_t done = 0; done < e.length;) {
    const uint64_t n = std::min<uint64_t>(zeros.size(), e.length - done);
    ROMULUS_RETURN_IF_ERROR(PwriteAll(fd, zeros.data(), static_cast<size_t>(n), e.offset + done, what));
    done += n;
  }
  return Status::Ok();
}

DiskStaging::DiskStaging(size_t max_memory_bytes, DiskSpill spill)
    : buf_(0, max_memory_bytes), spill_(std::move(spill)) {}

DiskStaging::~DiskStaging() {
  if (spill_fd_ >= 0) ::close(spill_fd_);
}

Status DiskStaging::OpenSpill() {
  if (spill_fd_ >= 0) return Status::Ok();
  // Unnamed where the filesystem can (O_TMPFILE), else named and unlinked
  // at once: either way a crash leaves no spill file behind.
  spill_fd_ = ::open(spill_.dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (spill_fd_ < 0 && (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL)) {
    std::string name = spill_.dir + "/.romulus-spill.XXXXXX";
    spill_fd_ = ::mkostemp(name.data(), O_CLOEXEC);
    if (spill_fd_ >= 0) ::unlink(name.c_str());
  }
  if (spill_fd_ < 0) return Status::StorageErrno("creating a disk spill file in " + spill_.dir, errno);
  return Status::Ok();
}

Status DiskStaging::Stage(uint64_t epoch, const DiskEntry& e) {
  if (e.kind == kDiskEntryWrite && e.length > protocol::kMaxDiskWriteChunk) {
    return Status::InvalidArgument("staging a disk write of " + std::to_string(e.length) + " bytes (at most " +
                                   std::to_string(protocol::kMaxDiskWriteChunk) + ")");
  }
  const size_t need = kDiskEntryHead + (e.kind == kDiskEntryWrite ? e.length : 0);
  // In memory while it fits and nothing of the epoch is spilled yet (the
  // spill holds the epoch's tail, so memory then spill is stream order).
  if (spill_len_ == 0 && need <= buf_.max_capacity() - buf_.size()) {
    Result<uint8_t*> dst = buf_.Append(need);
    if (!dst.ok()) return dst.status().With("staging a disk record");
    EncodeDiskEntryHead(e, *dst);
    if (e.kind == kDiskEntryWrite && e.length > 0) std::memcpy(*dst + kDiskEntryHead, e.data, e.length);
    buf_.Commit(need);
    if (e.kind == kDiskEntryWrite) write_bytes_ += e.length;
    return Status::Ok();
  }
  if (spill_.max_bytes == 0 || spill_.dir.empty() || need > spill_.max_bytes - std::min(spill_.max_bytes, spill_len_)) {
    return Status::OutOfRange(
        "epoch " + std::to_string(epoch) + " carries more disk data than this backup stages (" +
        std::to_string(buf_.max_capacity()) + " bytes in memory, restore --max-disk-staging; " +
        (spill_.max_bytes == 0 || spill_.dir.empty() ? std::string("no spilling")
                                                     : std::to_string(spill_.max_bytes) + " spilled to " + spill_.dir +
                                                           ", restore --max-disk-spill") +
        "); refusing the epoch");
  }
  ROMULUS_RETURN_IF_ERROR(OpenSpill());
  uint8_t head[kDiskEntryHead];
  EncodeDiskEntryHead(e, head);
  std::vector<struct iovec> iov = {{head, kDiskEntryHead}};
  if (e.kind == kDiskEntryWrite) iov.push_back({const_cast<uint8_t*>(e.data), static_cast<size_t>(e.length)});
  Status s = PwritevAll(spill_fd_, iov, spill_len_, "spilling epoch " + std::to_string(epoch) + "'s disk data to " + spill_.dir);
  if (!s.ok()) {
    // Nothing of this entry counts; what it wrote is cut off again (best
    // effort: what lies beyond spill_len_ is never read).
    (void)::ftruncate(spill_fd_, static_cast<off_t>(spill_len_));
    return s;
  }
  if (spill_len_ == 0) {
    ++spilled_epochs_;
    if (spilled_epochs_ == 1) {
      spdlog::info("disk staging: epoch {} holds more than the {} bytes staged in memory; the rest is spilled to {} "
                   "(restore --max-disk-staging, --max-disk-spill)",
                   epoch, buf_.max_capacity(), spill_.dir);
    }
  }
  spill_len_ += need;
  if (e.kind == kDiskEntryWrite) write_bytes_ += e.length;
  return Status::Ok();
}

Status DiskStaging::ForEachEntry(const DiskEntryFn& fn) {
  ROMULUS_RETURN_IF_ERROR(ForEachDiskEntry(buf_.view(), fn));
  if (spill_len_ == 0) return Status::Ok();
  return ForEachDiskEntryInFile(spill_fd_, 0, spill_len_, &window_, fn, "reading the disk spill file in " + spill_.dir);
}

Status DiskStaging::ForEachPiece(const std::function<Status(std::span<const uint8_t>)>& fn) {
  if (buf_.size() > 0) ROMULUS_RETURN_IF_ERROR(fn(buf_.view()));
  if (spill_len_ == 0) return Status::Ok();
  if (window_.size() < kDiskSectionWindow) window_.resize(kDiskSectionWindow);
  for (uint64_t off = 0; off < spill_len_;) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(window_.size(), spill_len_ - off));
    ROMULUS_RETURN_IF_ERROR(PreadAll(spill_fd_, window_.data(), n, off, "reading the disk spill file in " + spill_.dir));
    ROMULUS_RETURN_IF_ERROR(fn({window_.data(), n}));
    off += n;
  }
  return Status::Ok();
}

Status DiskStaging::ReserveWrites(const std::function<int(uint32_t)>& fd_of, bool* supported) {
  if (write_bytes_ == 0) return Status::Ok();
  return ForEachEntry([&](const DiskEntry& e) -> Status {
    if (e.kind != kDiskEntryWrite || !*supported) return Status::Ok();
    return ReserveFileRange(fd_of(e.disk_id), e.offset, e.length, supported,
                            "reserving space for disk " + std::to_string(e.disk_id) + "'s writes");
  });
}

void DiskStaging::Clear() {
  buf_.Clear();
  write_bytes_ = 0;
  if (spill_len_ > 0) {
    // The blocks go back now, not at the next large epoch (best effort:
    // what lies beyond spill_len_ is never read).
    (void)::ftruncate(spill_fd_, 0);
    spill_len_ = 0;
  }
}

}  // namespace romulus::restore
