#include "restore/disk_staging.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "common/little_endian.h"

namespace romulus::restore {

void EncodeDiskEntryHead(const DiskEntry& e, uint8_t* out) {
  StoreLE32(out, e.disk_id);
  out[4] = e.kind;
  out[5] = e.flags;
  out[6] = out[7] = 0;
  StoreLE64(out + 8, e.offset);
  StoreLE64(out + 16, e.length);
}

Status ForEachDiskEntry(std::span<const uint8_t> section, const std::function<Status(const DiskEntry&)>& fn) {
  size_t pos = 0;
  while (pos < section.size()) {
    if (section.size() - pos < kDiskEntryHead) return Status::Corruption("disk section: truncated entry");
    const uint8_t* p = section.data() + pos;
    DiskEntry e;
    e.disk_id = LoadLE32(p);
    e.kind = p[4];
    e.flags = p[5];
    e.offset = LoadLE64(p + 8);
    e.length = LoadLE64(p + 16);
    pos += kDiskEntryHead;
    if (e.kind == kDiskEntryWrite) {
      if (section.size() - pos < e.length) return Status::Corruption("disk section: truncated write");
      e.data = section.data() + pos;
      pos += e.length;
    } else if (e.kind == kDiskEntryFlush) {
      if (e.length != 0 || e.offset != 0) return Status::Corruption("disk section: a flush with a range");
    } else if (e.kind != kDiskEntryZero) {
      return Status::Corruption("disk section: unknown entry kind " + std::to_string(e.kind));
    }
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

namespace {

Status WriteFully(int fd, const uint8_t* p, uint64_t n, uint64_t off, const std::string& what) {
  while (n > 0) {
    const size_t chunk = static_cast<size_t>(std::min<uint64_t>(n, uint64_t{1} << 30));
    ssize_t w = ::pwrite(fd, p, chunk, static_cast<off_t>(off));
    if (w < 0) {
      if (errno == EINTR) continue;
      return Status::StorageErrno(what, errno);
    }
    if (w == 0) return Status::StorageErrno(what, EIO);
    p += w;
    off += static_cast<uint64_t>(w);
    n -= static_cast<uint64_t>(w);
  }
  return Status::Ok();
}

}  // namespace

Status ApplyDiskEntry(int fd, const DiskEntry& e, const std::string& what) {
  if (e.kind == kDiskEntryWrite) return WriteFully(fd, e.data, e.length, e.offset, what);
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
    ROMULUS_RETURN_IF_ERROR(WriteFully(fd, zeros.data(), n, e.offset + done, what));
    done += n;
  }
  return Status::Ok();
}

Status DiskStaging::Stage(uint64_t epoch, const DiskEntry& e) {
  const size_t need = kDiskEntryHead + (e.kind == kDiskEntryWrite ? e.length : 0);
  if (need > buf_.max_capacity() - buf_.size()) {
    return Status::OutOfRange("epoch " + std::to_string(epoch) + " carries more disk data than the " +
                              std::to_string(buf_.max_capacity()) +
                              "-byte staging bound of this backup (restore --max-disk-staging); refusing the epoch");
  }
  Result<uint8_t*> dst = buf_.Append(need);
  if (!dst.ok()) return dst.status().With("staging a disk record");
  EncodeDiskEntryHead(e, *dst);
  if (e.kind == kDiskEntryWrite) std::memcpy(*dst + kDiskEntryHead, e.data, e.length);
  buf_.Commit(need);
  return Status::Ok();
}

}  // namespace romulus::restore
