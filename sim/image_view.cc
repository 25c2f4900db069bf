#include "sim/image_view.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <algorithm>
#include <cstring>

#include "sim/image_files.h"
#include "sim/image_journal.h"

namespace romulus::sim {

namespace {

constexpr uint64_t kMaxViewPages = uint64_t{1} << 32;

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

}  // namespace

// An index entry per pending disk record: 32 bytes for at least 24 of the
// section, bounded so a view of a huge pending record fails with a clear
// sentence (a restart applies it, then the view needs no index).
constexpr size_t kMaxViewDiskEntries = size_t{1} << 22;

ImageView::~ImageView() {
  if (image_ != nullptr) ::munmap(image_, pages_ * kImagePage);
  if (journal_fd_ >= 0) ::close(journal_fd_);
}

Result<std::unique_ptr<ImageView>> ImageView::Open(const std::string& path, size_t max_state) {
  std::unique_ptr<ImageView> v(new ImageView());
  Fd image(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (image.get() < 0) {
    if (errno == ENOENT) return Status::InvalidArgument("no image at " + path);
    return Status::StorageErrno("opening image " + path, errno);
  }
  bool exists = false;
  StateFile sf;
  ROMULUS_RETURN_IF_ERROR(ReadStateFile(path + ".state", max_state, &exists, &sf));
  if (!exists) return Status::InvalidArgument(path + " has no " + path + ".state: it is not a Romulus image");

  // A pending journal record: complete means Open would replay it (its
  // PATH.state becomes the checkpoint), incomplete means Open would drop it.
  JournalRecord rec;
  Fd journal(::open((path + ".journal").c_str(), O_RDONLY | O_CLOEXEC));
  if (journal.get() < 0 && errno != ENOENT) return Status::StorageErrno("opening " + path + ".journal", errno);
  if (journal.get() >= 0) ROMULUS_RETURN_IF_ERROR(ReadJournal(journal.get(), kMaxViewPages, max_state, &rec));
  if (rec.complete) {
    ROMULUS_RETURN_IF_ERROR(DecodeStateFile(rec.state_file, max_state, "journal record", &sf));
    if (!sf.committed || sf.epoch != rec.epoch || sf.pages != rec.guest_pages) {
      return Status::Corruption(path + ".journal: its record contradicts itself");
    }
    v->from_journal_ = true;
    v->note_ = "epoch " + std::to_string(rec.epoch) + " is in a complete journal record a restart replays";
  } else if (rec.present) {
    v->note_ = "an incomplete journal record of epoch " + std::to_string(rec.epoch) + " is dropped at restart";
  }
  if (!sf.committed) {
    return Status::InvalidArgument(path + " holds no committed checkpoint" +
                                   (v->note_.empty() ? std::string() : " (" + v->note_ + ")"));
  }
  struct stat st;
  if (::fstat(image.get(), &st) != 0) return Status::StorageErrno("image " + path, errno);
  if (sf.pages == 0 || sf.pages >= kMaxViewPages || static_cast<uint64_t>(st.st_size) != sf.pages * kImagePage) {
    return Status::Corruption(path + " is " + std::to_string(st.st_size) + " bytes but its checkpoint is a guest of " +
                              std::to_string(sf.pages) + " pages");
  }
  // Private and copy-on-write: the journal's pages land in this process's
  // copy only, never in the file.
  void* p = ::mmap(nullptr, sf.pages * kImagePage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE,
                   image.get(), 0);
  if (p == MAP_FAILED) return Status::StorageErrno("mapping image " + path, errno);
  v->image_ = static_cast<uint8_t*>(p);
  v->pages_ = sf.pages;
  v->maybe_data_.assign((sf.pages + 63) / 64, 0);
  auto mark = [&v](uint64_t pfn) { v->maybe_data_[pfn >> 6] |= uint64_t{1} << (pfn & 63); };
  ForEachDataRange(image.get(), sf.pages * kImagePage, [&](uint64_t off, uint64_t len) {
    const uint64_t end = std::min(sf.pages, (off + len + kImagePage - 1) / kImagePage);
    for (uint64_t pfn = off / kImagePage; pfn < end; ++pfn) mark(pfn);
  });
  for (size_t i = 0; rec.complete && i < rec.pfns.size(); ++i) {
    const uint64_t pfn = rec.pfns[i] & ~kJournalZeroPage;
    if (pfn >= sf.pages) return Status::Corruption(path + ".journal: page beyond the guest");
    mark(pfn);
    uint8_t* dst = v->image_ + pfn * kImagePage;
    if (rec.pfns[i] & kJournalZeroPage) {
      std::memset(dst, 0, kImagePage);
    } else {
      ROMULUS_RETURN_IF_ERROR(PreadAll(journal.get(), dst, kImagePage, rec.pages_offset + i * kImagePage,
                                       "reading " + path + ".journal"));
    }
  }
  if (rec.complete && rec.disk_len > 0) {
    std::vector<uint8_t> window;
    uint64_t at = rec.disk_offset;  // of the entry being walked
    ROMULUS_RETURN_IF_ERROR(ForEachDiskEntryInFile(
        journal.get(), rec.disk_offset, rec.disk_len, &window,
        [&](const DiskEntry& e) -> Status {
          if (v->pending_disk_.size() == kMaxViewDiskEntries) {
            return Status::Unsupported(path + ".journal: the pending record holds more than " +
                                       std::to_string(kMaxViewDiskEntries) +
                                       " disk records; start the backup once (it applies the record), then verify");
          }
          v->pending_disk_.push_back({e.disk_id, e.kind, e.offset, e.length, at + kDiskEntryHead});
          at += kDiskEntryHead + (e.kind == kDiskEntryWrite ? e.length : 0);
          return Status::Ok();
        },
        "reading " + path + ".journal"));
    v->journal_fd_ = ::dup(journal.get());
    if (v->journal_fd_ < 0) return Status::StorageErrno("keeping " + path + ".journal open", errno);
  }
  v->disks_ = sf.disks;
  v->path_ = path;
  for (const DiskState& d : v->disks_) {
    struct stat dst;
    const std::string dp = path + ".disk" + std::to_string(d.id);
    if (::stat(dp.c_str(), &dst) != 0) return Status::Corruption("the checkpoint's disk " + dp + " is missing");
    if (static_cast<uint64_t>(dst.st_size) != d.size) {
      return Status::Corruption(dp + " is " + std::to_string(dst.st_size) + " bytes, its checkpoint says " +
                                std::to_string(d.size));
    }
  }
  v->epoch_ = sf.epoch;
  v->recorded_digest_ = sf.digest;
  v->identity_ = std::move(sf.identity);
  v->state_ = std::move(sf.state);
  return v;
}

Status ImageView::ReadDisk(uint32_t id, uint64_t offset, std::span<uint8_t> out) const {
  const DiskState* d = nullptr;
  for (const DiskState& x : disks_) {
    if (x.id == id) d = &x;
  }
  if (d == nullptr) return Status::InvalidArgument("the checkpoint has no disk " + std::to_string(id));
  if (offset > d->size || out.size() > d->size - offset) {
    return Status::InvalidArgument("read beyond disk " + std::to_string(id));
  }
  const std::string dp = path_ + ".disk" + std::to_string(id);
  Fd fd(::open(dp.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return Status::StorageErrno("opening " + dp, errno);
  ROMULUS_RETURN_IF_ERROR(PreadAll(fd.get(), out.data(), out.size(), offset, "reading " + dp));
  // What a restart's replay would write, in its order, over this range.
  const uint64_t end = offset + out.size();
  for (const PendingDiskEntry& e : pending_disk_) {
    if (e.disk_id != id) continue;
    const uint64_t lo = std::max(offset, e.offset), hi = std::min(end, e.offset + e.length);
    if (lo >= hi) continue;
    if (e.kind == kDiskEntryWrite) {
      ROMULUS_RETURN_IF_ERROR(PreadAll(journal_fd_, out.data() + (lo - offset), static_cast<size_t>(hi - lo),
                                       e.data_at + (lo - e.offset), "reading " + path_ + ".journal"));
    } else if (e.kind == kDiskEntryZero) {
      std::memset(out.data() + (lo - offset), 0, hi - lo);
    }
  }
  return Status::Ok();
}

Result<uint64_t> ImageView::DiskDigest(uint32_t id) const {
  const DiskState* d = nullptr;
  for (const DiskState& x : disks_) {
    if (x.id == id) d = &x;
  }
  if (d == nullptr) return Status::InvalidArgument("the checkpoint has no disk " + std::to_string(id));
  uint64_t sum = 0;
  std::vector<uint8_t> buf(256 * kImagePage);
  for (uint64_t pos = 0; pos < d->size; pos += buf.size()) {
    const uint64_t n = std::min<uint64_t>(buf.size(), d->size - pos);
    std::memset(buf.data(), 0, buf.size());
    ROMULUS_RETURN_IF_ERROR(ReadDisk(id, pos, {buf.data(), static_cast<size_t>(n)}));
    for (uint64_t b = 0; b * kImagePage < n; ++b) sum += DiskBlockHash(pos / kImagePage + b, buf.data() + b * kImagePage);
  }
  return sum;
}

}  // namespace romulus::sim
