#include "sim/image_files.h"

#include "common/digest.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

namespace romulus::sim {

namespace {

// The pid holding a FLOCK on (dev, ino), from /proc/locks, or 0. Best effort:
// it only makes the "in use" message more useful.
long FlockHolder(dev_t dev, ino_t ino) {
  std::ifstream in("/proc/locks");
  std::string line;
  while (std::getline(in, line)) {
    // "1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF" (blocked waiters
    // have "->" before FLOCK and are skipped by the format).
    char kind[16] = {};
    long pid = 0;
    unsigned maj = 0, min = 0;
    unsigned long long inode = 0;
    if (std::sscanf(line.c_str(), "%*d: %15s %*s %*s %ld %x:%x:%llu", kind, &pid, &maj, &min, &inode) == 5 &&
        std::string(kind) == "FLOCK" && maj == major(dev) && min == minor(dev) && inode == ino) {
      return pid;
    }
  }
  return 0;
}

}  // namespace

Status LockImage(int fd, const std::string& path) {
  if (::flock(fd, LOCK_EX | LOCK_NB) == 0) return Status::Ok();
  const int err = errno;
  if (err != EWOULDBLOCK) return Status::StorageErrno("locking image " + path, err);
  struct stat st;
  long pid = ::fstat(fd, &st) == 0 ? FlockHolder(st.st_dev, st.st_ino) : 0;
  return Status::InvalidArgument("image " + path + " is in use by another romulus restore" +
                                 (pid > 0 ? " (pid " + std::to_string(pid) + ")" : std::string()) +
                                 "; refusing to touch it");
}

Status PunchImagePage(int fd, uint64_t pfn) {
  const off_t off = static_cast<off_t>(pfn * kImagePage);
  if (::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, kImagePage) == 0) return Status::Ok();
  if (errno != EOPNOTSUPP) return Status::StorageErrno("punching page " + std::to_string(pfn), errno);
  static const std::vector<uint8_t> zero(kImagePage, 0);
  return PwriteAll(fd, zero.data(), zero.size(), pfn * kImagePage, "zeroing page " + std::to_string(pfn));
}

void ForEachDataRange(int fd, uint64_t size, const std::function<void(uint64_t, uint64_t)>& fn) {
  if (fd < 0) {
    if (size > 0) fn(0, size);
    return;
  }
  uint64_t pos = 0;
  while (pos < size) {
    off_t data = ::lseek(fd, static_cast<off_t>(pos), SEEK_DATA);
    if (data < 0) {
      if (errno == ENXIO) return;  // only holes from pos on
      fn(pos, size - pos);         // the filesystem cannot tell: read it all
      return;
    }
    off_t hole = ::lseek(fd, data, SEEK_HOLE);
    uint64_t end = hole < 0 ? size : std::min<uint64_t>(size, static_cast<uint64_t>(hole));
    uint64_t start = static_cast<uint64_t>(data) / kImagePage * kImagePage;
    end = std::min<uint64_t>(size, (end + kImagePage - 1) / kImagePage * kImagePage);
    if (end <= start) return;
    fn(start, end - start);
    pos = end;
  }
}

Status ReplayJournalRecord(int image_fd, int journal_fd, const JournalRecord& rec, const std::string& state_path,
                           size_t max_state, bool durable, const std::function<int(uint32_t disk_id)>& disk_fd) {
  StateFile sf;
  ROMULUS_RETURN_IF_ERROR(DecodeStateFile(rec.state_file, max_state, "journal record of epoch " +
                                                                         std::to_string(rec.epoch), &sf));
  struct stat st;
  if (::fstat(image_fd, &st) != 0) return Status::StorageErrno("image", errno);
  if (!sf.committed || sf.epoch != rec.epoch || sf.pages != rec.guest_pages ||
      static_cast<uint64_t>(st.st_size) != rec.guest_pages * kImagePage) {
    return Status::Corruption("journal record of epoch " + std::to_string(rec.epoch) +
                              " does not fit the image (" + std::to_string(st.st_size) +
                              " bytes); remove the image or start over");
  }
  std::vector<uint8_t> page(kImagePage);
  for (size_t i = 0; i < rec.pfns.size(); ++i) {
    const uint64_t pfn = rec.pfns[i] & ~kJournalZeroPage;
    if (pfn >= rec.guest_pages) return Status::Corruption("journal record: page beyond the guest");
    if (rec.pfns[i] & kJournalZeroPage) {
      ROMULUS_RETURN_IF_ERROR(PunchImagePage(image_fd, pfn));
      continue;
    }
    ROMULUS_RETURN_IF_ERROR(PreadAll(journal_fd, page.data(), kImagePage, rec.pages_offset + i * kImagePage,
                                     "reading the journal"));
    ROMULUS_RETURN_IF_ERROR(PwriteAll(image_fd, page.data(), kImagePage, pfn * kImagePage, "replaying the journal"));
  }
  if (durable && ::fdatasync(image_fd) != 0) return Status::StorageErrno("syncing the image", errno);
  if (rec.disk_len > 0) {
    std::vector<int> touched;
    std::vector<uint8_t> window;
    ROMULUS_RETURN_IF_ERROR(ForEachDiskEntryInFile(journal_fd, rec.disk_offset, rec.disk_len, &window, [&](const DiskEntry& e) -> Status {
      const int fd = disk_fd ? disk_fd(e.disk_id) : -1;
      if (fd < 0) {
        return Status::Corruption("journal record of epoch " + std::to_string(rec.epoch) + " writes disk " +
                                  std::to_string(e.disk_id) + ", which this image does not have");
      }
      if (std::find(touched.begin(), touched.end(), fd) == touched.end()) touched.push_back(fd);
      return ApplyDiskEntry(fd, e, "replaying the journal to disk " + std::to_string(e.disk_id));
    }, "reading the journal's disk section"));
    for (int fd : touched) {
      if (durable && ::fdatasync(fd) != 0) return Status::StorageErrno("syncing a disk", errno);
    }
  }
  ROMULUS_RETURN_IF_ERROR(WriteStateTmp(state_path, rec.state_file, durable));
  ROMULUS_RETURN_IF_ERROR(InstallStateTmp(state_path, durable));
  return ResetJournal(journal_fd, durable);
}

uint64_t DiskBlockHash(uint64_t block, const uint8_t* bytes4k) { return PageHash(block, bytes4k); }

Result<uint64_t> DiskFileDigest(int fd, uint64_t size) {
  uint64_t sum = 0;
  Status err;
  std::vector<uint8_t> buf(256 * kImagePage);
  ForEachDataRange(fd, size, [&](uint64_t off, uint64_t len) {
    for (uint64_t pos = off; err.ok() && pos < off + len;) {
      const uint64_t n = std::min<uint64_t>(buf.size(), off + len - pos);
      std::memset(buf.data(), 0, buf.size());
      err = PreadAll(fd, buf.data(), static_cast<size_t>(n), pos, "reading a disk");
      for (uint64_t b = 0; err.ok() && b * kImagePage < n; ++b) {
        sum += DiskBlockHash(pos / kImagePage + b, buf.data() + b * kImagePage);
      }
      pos += n;
    }
  });
  if (!err.ok()) return err;
  return sum;
}

}  // namespace romulus::sim

namespace romulus::sim {

Status CopySparse(int from, int to, uint64_t size, const std::string& what) {
  if (::ftruncate(to, 0) != 0 || ::ftruncate(to, static_cast<off_t>(size)) != 0) {
    return Status::Storage(what + ": truncate: " + std::strerror(errno));
  }
  std::vector<uint8_t> buf(uint64_t{1} << 20);
  off_t pos = 0;
  while (static_cast<uint64_t>(pos) < size) {
    off_t data = ::lseek(from, pos, SEEK_DATA);
    if (data < 0) {
      if (errno == ENXIO) break;  // no data after pos: the rest is a hole
      return Status::Storage(what + ": seek data: " + std::strerror(errno));
    }
    if (static_cast<uint64_t>(data) >= size) break;
    off_t hole = ::lseek(from, data, SEEK_HOLE);
    if (hole < 0) return Status::Storage(what + ": seek hole: " + std::strerror(errno));
    const uint64_t end = std::min<uint64_t>(static_cast<uint64_t>(hole), size);
    for (uint64_t off = static_cast<uint64_t>(data); off < end;) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), end - off));
      ROMULUS_RETURN_IF_ERROR(PreadAll(from, buf.data(), n, off, what));
      ROMULUS_RETURN_IF_ERROR(PwriteAll(to, buf.data(), n, off, what));
      off += n;
    }
    pos = static_cast<off_t>(end);
  }
  return Status::Ok();
}

}  // namespace romulus::sim
