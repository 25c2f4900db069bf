#include "sim/image_sink.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/statvfs.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <algorithm>
#include <filesystem>
#include <cstring>
#include <map>
#include <new>

#include "restore/image_chunk_hashes.h"
#include "sim/image_files.h"
#include "sim/sim_spec.h"

namespace romulus::sim {

namespace {

constexpr uint64_t kPage = kImagePage;
constexpr uint32_t kNoSlot = UINT32_MAX;
// Slots are uint32_t; this is far beyond any guest the receiver accepts.
constexpr uint64_t kMaxSinkPages = uint64_t{1} << 32;

}  // namespace

ImageSink::ImageSink(const ImageSinkOptions& options) : options_(options) {}

ImageSink::~ImageSink() {
  activated_.reset();  // stops its workload thread
  UnmapImage();
  if (journal_fd_ >= 0) ::close(journal_fd_);
  for (const auto& [id, fd] : disk_fds_) ::close(fd);
  if (fd_ >= 0) ::close(fd_);  // releases the lock
}

Result<std::unique_ptr<ImageSink>> ImageSink::Open(const ImageSinkOptions& options) {
  std::unique_ptr<ImageSink> sink(new ImageSink(options));
  if (!options.path.empty()) {
    ROMULUS_RETURN_IF_ERROR(sink->LockAndOpen());
    ROMULUS_RETURN_IF_ERROR(sink->LoadExisting());
  }
  return sink;
}

Status ImageSink::LockAndOpen() {
  const std::string& path = options_.path;
  // No O_TRUNC: nothing may change before the lock is ours. 0600: the image
  // is a copy of the guest's memory.
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd_ < 0) return Status::StorageErrno("image " + path, errno);
  ROMULUS_RETURN_IF_ERROR(LockImage(fd_, path));
  // The journal is opened if it exists; it is created by the first commit
  // that needs it, so a refused foreign file gets no neighbour.
  journal_fd_ = ::open(journal_path().c_str(), O_RDWR | O_CLOEXEC);
  if (journal_fd_ < 0 && errno != ENOENT) return Status::StorageErrno("opening " + journal_path(), errno);
  if (!options_.start_over) return Status::Ok();
  if (::ftruncate(fd_, 0) != 0) return Status::StorageErrno("truncating image " + path, errno);
  if (journal_fd_ >= 0 && ::ftruncate(journal_fd_, 0) != 0) {
    return Status::StorageErrno("truncating " + journal_path(), errno);
  }
  if (::unlink(state_path().c_str()) != 0 && errno != ENOENT) {
    return Status::StorageErrno("removing " + state_path(), errno);
  }
  return Status::Ok();
}

Status ImageSink::LoadExisting() {
  const std::string& path = options_.path;
  if (options_.start_over) return Status::Ok();
  ROMULUS_RETURN_IF_ERROR(RecoverJournal());
  struct stat st;
  if (::fstat(fd_, &st) != 0) return Status::StorageErrno("image " + path, errno);
  const uint64_t size = static_cast<uint64_t>(st.st_size);

  bool exists = false;
  StateFile sf;
  Status s = ReadStateFile(state_path(), options_.max_state_bytes, &exists, &sf);
  if (!exists && s.ok()) {
    if (size == 0) return Status::Ok();  // new (or never used) image
    return Status::InvalidArgument("image " + path + " exists (" + std::to_string(size) +
                                   " bytes) but " + state_path() +
                                   " does not: it is not a Romulus image; refusing to overwrite it "
                                   "(remove it or start over)");
  }
  if (!s.ok()) {
    if (s.code() == Code::kStorage) return s;
    return Status::Corruption("image " + path + ": " + s.message() +
                              "; its committed epoch cannot be trusted (remove it or start over)");
  }
  if (!sf.committed) {
    // Ours, but no epoch was ever committed: what an unfinished first sync
    // left. Its pages are known by their hashes (read from the data ranges
    // only), so a new session of the same size resumes instead of starting
    // over (BeginSession, HELD); nothing in it can ever be activated.
    if (sf.pages == 0 || sf.pages >= kMaxSinkPages || sf.pages * kPage != size) return Status::Ok();
    ROMULUS_RETURN_IF_ERROR(MapImage(sf.pages, /*zero=*/false));
    ResetDigestFromImage();
    return Status::Ok();
  }
  if (sf.pages == 0 || sf.pages >= kMaxSinkPages || sf.pages * kPage != size) {
    return Status::Corruption("image " + path + " is " + std::to_string(size) + " bytes but " + state_path() +
                              " describes a guest of " + std::to_string(sf.pages) +
                              " pages (remove it or start over)");
  }
  ROMULUS_RETURN_IF_ERROR(MapImage(sf.pages, /*zero=*/false));
  ResetDigestFromImage();
  if (digest_->value() != sf.digest) {
    // Only a damaged disk or a foreign writer gets here: every commit is
    // journaled. Nothing in such an image may be resumed.
    recovery_note_ = "image " + path + " does not match the digest of epoch " + std::to_string(sf.epoch) +
                     " in " + state_path() + " (a commit was interrupted): holding no committed epoch";
    spdlog::warn("{}", recovery_note_);
    return Status::Ok();
  }
  // The disks are part of the checkpoint: each must be there, of its size,
  // and (where kept) match its digest, or nothing committed is trusted.
  for (const DiskState& d : sf.disks) {
    Result<int> dfd = OpenDisk(d.id, false);
    std::string problem;
    struct stat dst;
    if (!dfd.ok()) {
      problem = dfd.status().message();
    } else if (::fstat(*dfd, &dst) != 0 || static_cast<uint64_t>(dst.st_size) != d.size) {
      problem = disk_path(d.id) + " is not " + std::to_string(d.size) + " bytes";
    } else if (d.has_digest) {
      Result<uint64_t> dg = DiskFileDigest(*dfd, d.size);
      if (!dg.ok()) return dg.status();
      if (*dg != d.digest) problem = disk_path(d.id) + " does not match its digest in " + state_path();
    }
    if (!problem.empty()) {
      recovery_note_ = "image " + path + ": disk " + std::to_string(d.id) + " of epoch " + std::to_string(sf.epoch) +
                       ": " + problem + ": holding no committed epoch";
      spdlog::warn("{}", recovery_note_);
      return Status::Ok();
    }
  }
  committed_disks_ = std::move(sf.disks);
  committed_identity_ = std::move(sf.identity);
  committed_state_ = std::move(sf.state);
  last_committed_.store(sf.epoch, std::memory_order_release);
  has_committed_.store(true, std::memory_order_release);
  return Status::Ok();
}

Status ImageSink::RecoverJournal() {
  if (journal_fd_ < 0) return Status::Ok();
  JournalRecord rec;
  ROMULUS_RETURN_IF_ERROR(ReadJournal(journal_fd_, kMaxSinkPages, options_.max_state_bytes, &rec));
  if (!rec.present) return Status::Ok();
  if (!rec.complete) {
    // The commit point was never reached: the image and PATH.state are the
    // previous checkpoint, untouched. Drop the record.
    ROMULUS_RETURN_IF_ERROR(ResetJournal(journal_fd_, options_.durable));
    recovery_note_ = "dropped an incomplete journal record of epoch " + std::to_string(rec.epoch) +
                     " (that commit never reached its commit point)";
    spdlog::warn("image {}: {}", options_.path, recovery_note_);
    return Status::Ok();
  }
  ROMULUS_RETURN_IF_ERROR(ReplayJournalRecord(fd_, journal_fd_, rec, state_path(), options_.max_state_bytes,
                                              options_.durable, [this](uint32_t id) {
                                                Result<int> fd = OpenDisk(id, false);
                                                return fd.ok() ? *fd : -1;
                                              }));
  recovery_note_ = "replayed epoch " + std::to_string(rec.epoch) +
                   " from the journal (its commit was interrupted after the commit point)";
  spdlog::warn("image {}: {}", options_.path, recovery_note_);
  return Status::Ok();
}

Status ImageSink::MapImage(uint64_t pages, bool zero) {
  const uint64_t bytes = pages * kPage;
  void* p;
  if (fd_ >= 0) {
    if (zero) {
      // Truncating to 0 and back gives a sparse all-zero file without
      // writing a byte (the mapping is gone: UnmapImage came first).
      if (::ftruncate(fd_, 0) != 0 || ::ftruncate(fd_, static_cast<off_t>(bytes)) != 0) {
        return Status::StorageErrno("sizing image " + options_.path, errno);
      }
    }
    // Read-only: every write goes through pwrite, so a block that cannot be
    // allocated is an error return, never a SIGBUS.
    p = ::mmap(nullptr, bytes, PROT_READ, MAP_SHARED, fd_, 0);
  } else {
    p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  }
  if (p == MAP_FAILED) return Status::StorageErrno("mapping a " + std::to_string(bytes) + "-byte image", errno);
  image_ = static_cast<uint8_t*>(p);

  if (pages != pages_ || !digest_) {
    Result<std::unique_ptr<MemoryDigest>> d = MemoryDigest::Create(pages);
    if (!d.ok()) return d.status();
    digest_ = std::move(*d);
    slot_.reset(new (std::nothrow) uint32_t[pages]);
    if (!slot_) return Status::FromErrno("image sink: allocating the staging index", ENOMEM);
    std::memset(slot_.get(), 0xff, pages * sizeof(uint32_t));
    if (staged_pfns_) retired_reallocations_ += staged_pfns_->reallocations() + staged_bytes_->reallocations();
    staged_pfns_ = std::make_unique<buffer::ReusableBuffer>(0, pages * sizeof(uint64_t));
    staged_bytes_ = std::make_unique<buffer::ReusableBuffer>(0, pages * kPage);
  } else {
    digest_->Reset();
  }
  if (zero || allocated_.size() != (pages + 63) / 64) allocated_.assign((pages + 63) / 64, 0);
  pages_ = pages;
  digest_value_.store(digest_->value(), std::memory_order_release);
  // A fresh mapping of zeros is described by an all-zero digest; an
  // existing file only once ResetDigestFromImage has read it.
  digest_known_ = zero || fd_ < 0;
  return Status::Ok();
}

void ImageSink::UnmapImage() {
  if (image_ != nullptr) ::munmap(image_, pages_ * kPage);
  image_ = nullptr;
}

Status ImageSink::ReadPages(uint64_t pfn, uint64_t count, uint8_t* out) const {
  if (fd_ < 0) {
    std::memcpy(out, image_ + pfn * kPage, count * kPage);
    return Status::Ok();
  }
  return PreadAll(fd_, out, count * kPage, pfn * kPage, "reading image " + options_.path);
}

void ImageSink::ResetDigestFromImage() {
  digest_->Reset();
  digest_known_ = true;
  // Holes are zero pages, whose hash is 0: only the data ranges are read,
  // and they are what allocated_ starts from.
  std::vector<uint8_t> buf(256 * kPage);
  ForEachDataRange(fd_, pages_ * kPage, [&](uint64_t off, uint64_t len) {
    for (uint64_t pfn = off / kPage; pfn < (off + len) / kPage;) {
      const uint64_t n = std::min<uint64_t>(256, (off + len) / kPage - pfn);
      if (!ReadPages(pfn, n, buf.data()).ok()) {
        // Unreadable: leave the digest wrong so the image is not trusted.
        digest_->Update(pfn, std::vector<uint8_t>(kPage, 0xff).data());
        digest_known_ = false;
        return;
      }
      for (uint64_t i = 0; i < n; ++i) {
        digest_->Update(pfn + i, buf.data() + i * kPage);
        SetBit(allocated_, pfn + i, true);
      }
      pfn += n;
    }
  });
  digest_value_.store(digest_->value(), std::memory_order_release);
}

uint64_t ImageSink::ComputeImageDigest() const {
  if (image_ == nullptr) return 0;
  uint64_t sum = 0;
  bool readable = true;
  std::vector<uint8_t> buf(256 * kPage);
  // A hole reads as a zero page, whose hash is 0: only data ranges count.
  ForEachDataRange(fd_, pages_ * kPage, [&](uint64_t off, uint64_t len) {
    for (uint64_t pfn = off / kPage; readable && pfn < (off + len) / kPage;) {
      const uint64_t n = std::min<uint64_t>(256, (off + len) / kPage - pfn);
      readable = ReadPages(pfn, n, buf.data()).ok();
      for (uint64_t i = 0; readable && i < n; ++i) sum += PageHash(pfn + i, buf.data() + i * kPage);
      pfn += n;
    }
  });
  return readable ? sum : ~sum;  // unreadable never matches
}

uint64_t ImageSink::staging_reallocations() const {
  uint64_t n = retired_reallocations_;
  if (staged_pfns_) n += staged_pfns_->reallocations() + staged_bytes_->reallocations();
  return n;
}

Status ImageSink::EnsureApplied() {
  if (!replay_pending_) return Status::Ok();
  JournalRecord rec;
  ROMULUS_RETURN_IF_ERROR(ReadJournal(journal_fd_, kMaxSinkPages, options_.max_state_bytes, &rec));
  if (rec.complete) {
    ROMULUS_RETURN_IF_ERROR(ReplayJournalRecord(fd_, journal_fd_, rec, state_path(), options_.max_state_bytes,
                                                options_.durable, [this](uint32_t id) { return disk_fd(id); })
                                .With("re-applying epoch " + std::to_string(rec.epoch)));
    for (uint64_t e : rec.pfns) {
      if ((e & kJournalZeroPage) == 0 && e < pages_) SetBit(allocated_, e, true);
    }
  }
  replay_pending_ = false;
  return Status::Ok();
}

Status ImageSink::BeginSession(uint64_t guest_pages, const std::string& identity) {
  return BeginSessionWithDisks(guest_pages, identity, {});
}

int ImageSink::disk_fd(uint32_t id) const {
  for (const auto& [i, fd] : disk_fds_) {
    if (i == id) return fd;
  }
  return -1;
}

// The fd of disk `id`, opened once (created if asked; an anonymous memfd
// without a path).
Result<int> ImageSink::OpenDisk(uint32_t id, bool create) {
  if (int fd = disk_fd(id); fd >= 0) return fd;
  int fd;
  if (options_.path.empty()) {
    if (!create) return Status::InvalidArgument("no disk " + std::to_string(id));
    fd = ::memfd_create(("romulus-disk" + std::to_string(id)).c_str(), MFD_CLOEXEC);
    if (fd < 0) return Status::StorageErrno("creating an in-memory disk", errno);
  } else {
    fd = ::open(disk_path(id).c_str(), O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0), 0600);
    if (fd < 0) return Status::StorageErrno("opening " + disk_path(id), errno);
    if (create && options_.durable) {
      Status s = SyncDirOf(disk_path(id));
      if (!s.ok()) {
        ::close(fd);
        return s;
      }
    }
  }
  disk_fds_.emplace_back(id, fd);
  return fd;
}

Status ImageSink::BeginSessionWithDisks(uint64_t guest_pages, const std::string& identity,
                                        std::span<const protocol::DiskInfo> disks) {
  Discard();
  in_session_ = false;
  if (disks.size() > kMaxImageDisks) return Status::OutOfRange("image sink: too many disks");
  for (const protocol::DiskInfo& d : disks) {
    if (d.name.size() > kMaxImageDiskName || d.size_bytes == 0) {
      return Status::InvalidArgument("image sink: disk " + std::to_string(d.id) + " is malformed");
    }
  }
  if (guest_pages == 0 || guest_pages >= kMaxSinkPages) {
    return Status::OutOfRange("image sink: a guest of " + std::to_string(guest_pages) + " pages is out of range");
  }
  if (identity.size() > kMaxImageIdentity) return Status::InvalidArgument("image sink: guest identity too long");
  ROMULUS_RETURN_IF_ERROR(EnsureApplied());

  if (has_committed()) {
    if (guest_pages != pages_) {
      if (!options_.start_over) {
        return Status::InvalidArgument(
            "image " + (options_.path.empty() ? std::string("(memory)") : options_.path) + " holds epoch " +
            std::to_string(last_committed_epoch()) + " of a guest of " + std::to_string(pages_) +
            " pages; refusing a guest of " + std::to_string(guest_pages) + " pages (start over to replace it)");
      }
      spdlog::warn("image sink: dropping committed epoch {} of a {}-page guest for a {}-page guest",
                   last_committed_epoch(), pages_, guest_pages);
      has_committed_.store(false, std::memory_order_release);
      committed_identity_.clear();
      committed_state_.clear();
      committed_disks_.clear();
    }
  }
  if (has_committed() && !committed_disks_.empty()) {
    // The committed disks are part of the checkpoint failover would use:
    // a session with other disks (ids or sizes) must not overwrite them.
    bool same = committed_disks_.size() == disks.size();
    for (size_t i = 0; same && i < disks.size(); ++i) {
      same = committed_disks_[i].id == disks[i].id && committed_disks_[i].size == disks[i].size_bytes;
    }
    if (!same) {
      std::string had;
      for (const DiskState& d : committed_disks_) {
        had += (had.empty() ? "" : ", ") + std::to_string(d.id) + ":" + std::to_string(d.size);
      }
      if (!options_.start_over) {
        return Status::InvalidArgument("image " + (options_.path.empty() ? std::string("(memory)") : options_.path) +
                                       " holds epoch " + std::to_string(last_committed_epoch()) +
                                       " with disks (id:bytes) " + had + "; refusing a session with " +
                                       std::to_string(disks.size()) +
                                       " other disk(s) (start over to replace it)");
      }
      spdlog::warn("image sink: dropping committed epoch {} (disks {}) for a session with other disks",
                   last_committed_epoch(), had);
      has_committed_.store(false, std::memory_order_release);
      committed_identity_.clear();
      committed_state_.clear();
      committed_disks_.clear();
    }
  }
  // The session's disk files: a disk with committed data is kept as it is
  // (the size matched above); any other is made an all-zero sparse file.
  session_disks_.clear();
  for (const protocol::DiskInfo& d : disks) {
    DiskState ds;
    ds.id = d.id;
    ds.size = d.size_bytes;
    ds.name = d.name;
    ds.has_digest = d.size_bytes <= kMaxDigestedDisk;
    const DiskState* kept = nullptr;
    if (has_committed()) {
      for (const DiskState& c : committed_disks_) {
        if (c.id == d.id) kept = &c;
      }
    }
    Result<int> fd = OpenDisk(d.id, true);
    if (!fd.ok()) return fd.status();
    if (kept != nullptr) {
      ds.has_digest = kept->has_digest;
      ds.digest = kept->digest;
      ds.lineage = kept->lineage;
      ds.tag = kept->tag;
    } else {
      // Nothing committed to protect. A disk file of this size is kept as
      // it is (an unfinished first sync, an old copy of the guest's disk):
      // with DISK_DIGESTS the primary sends only the chunks that differ
      // (docs/DISK.md §7.4), and without it its whole copy rewrites every
      // byte (holes and zero blocks as ZERO records). Any other is started
      // from zeros.
      struct stat st {};
      if (::fstat(*fd, &st) != 0) return Status::StorageErrno("sizing disk " + disk_path(d.id), errno);
      if (static_cast<uint64_t>(st.st_size) != d.size_bytes &&
          (::ftruncate(*fd, 0) != 0 || ::ftruncate(*fd, static_cast<off_t>(d.size_bytes)) != 0)) {
        return Status::StorageErrno("sizing disk " + disk_path(d.id), errno);
      }
    }
    session_disks_.push_back(std::move(ds));
  }
  if (!disk_staged_) {
    restore::DiskSpill spill;
    if (!options_.path.empty()) {
      const std::string dir = std::filesystem::path(options_.path).parent_path().string();
      spill = {dir.empty() ? "." : dir, options_.max_disk_spill_bytes};
    }
    disk_staged_ = std::make_unique<restore::DiskStaging>(options_.max_disk_staging_bytes, std::move(spill));
  }
  if (!has_committed()) {
    // Nothing to protect. PATH.state says "no committed epoch" first, so a
    // crash from here on never presents the half-written image as a
    // checkpoint. What an unfinished first sync of the same size left stays:
    // the digest knows every page of it (held_pages()), so the primary sends
    // only what differs and overwrites the rest; the first epoch's digest
    // check covers the pages kept. Otherwise start from an all-zero image.
    if (fd_ >= 0) {
      StateFile sf;
      sf.pages = guest_pages;
      sf.identity = identity;
      ROMULUS_RETURN_IF_ERROR(WriteStateFile(sf, /*committing=*/false));
    }
    const bool resume = image_ != nullptr && pages_ == guest_pages && digest_known_;
    if (resume) {
      uint64_t held = 0;
      for (uint64_t pfn = 0; pfn < pages_; ++pfn) held += digest_->hash(pfn) != 0;
      spdlog::info("image sink: resuming an unfinished first sync: the image holds {} non-zero pages of {}", held,
                   pages_);
    } else {
      UnmapImage();
      ROMULUS_RETURN_IF_ERROR(MapImage(guest_pages, /*zero=*/true));
    }
  }
  in_session_ = true;
  session_committed_ = false;
  need_resync_ = false;
  session_identity_ = identity;
  return Status::Ok();
}

Status ImageSink::CheckEpoch(uint64_t epoch, const char* what) {
  if (!in_session_) return Status::InvalidArgument(std::string("image sink: ") + what + " outside a session");
  if (need_resync_) {
    return Status::Corruption("image sink: the discarded first epoch was written into the image; "
                              "a new session (full resync) is required");
  }
  if (session_committed_ && epoch <= last_committed_epoch()) {
    return Status::Corruption(std::string("image sink: ") + what + " for epoch " + std::to_string(epoch) +
                              ", but epoch " + std::to_string(last_committed_epoch()) + " is already committed");
  }
  if (staging_active_ && epoch != staging_epoch_) {
    return Status::Corruption(std::string("image sink: ") + what + " for epoch " + std::to_string(epoch) +
                              " while epoch " + std::to_string(staging_epoch_) + " is being received");
  }
  if (!staging_active_) {
    staging_active_ = true;
    staging_epoch_ = epoch;
    direct_ = !has_committed();
  }
  return Status::Ok();
}

Status ImageSink::WritePageDirect(uint64_t pfn, const uint8_t* page) {
  if (fd_ < 0) {
    std::memcpy(image_ + pfn * kPage, page, kPage);
    return Status::Ok();
  }
  // A zero page needs a punch only where the image has data: what this
  // epoch wrote (a pfn sent twice), or what an unfinished sync left.
  const bool zero = IsZeroImagePage(page);
  if (zero && !TestBit(allocated_, pfn)) return Status::Ok();
  Status s = zero ? PunchImagePage(fd_, pfn) : PwriteAll(fd_, page, kPage, pfn * kPage, "writing image " + options_.path);
  if (s.ok()) {
    SetBit(allocated_, pfn, !zero);
  } else {
    // The block may hold part of the page now: the digest no longer
    // describes the image, so no later session may skip pages by it.
    digest_known_ = false;
  }
  return s;
}

Status ImageSink::OnPage(uint64_t epoch, uint64_t pfn, const uint8_t* page) {
  if (!in_session_) return Status::InvalidArgument("image sink: page outside a session");
  if (pfn >= pages_) {
    return Status::Corruption("image sink: page " + std::to_string(pfn) + " is beyond the guest's " +
                              std::to_string(pages_) + " pages");
  }
  ROMULUS_RETURN_IF_ERROR(CheckEpoch(epoch, "page"));
  if (direct_) {
    ROMULUS_RETURN_IF_ERROR(WritePageDirect(pfn, page));
    digest_->Update(pfn, page);
    digest_value_.store(digest_->value(), std::memory_order_release);
    return Status::Ok();
  }
  uint32_t slot = slot_[pfn];
  if (slot != kNoSlot) {  // sent twice in this epoch: the later copy wins
    std::memcpy(staged_bytes_->data() + uint64_t{slot} * kPage, page, kPage);
    return Status::Ok();
  }
  // Both appends are bounded by the guest size (one slot per pfn at most),
  // so they only fail if memory runs out.
  Result<uint8_t*> pf = staged_pfns_->Append(sizeof(uint64_t));
  if (!pf.ok()) return pf.status().With("staging page " + std::to_string(pfn));
  std::memcpy(*pf, &pfn, sizeof pfn);
  Result<uint8_t*> pb = staged_bytes_->Append(kPage);
  if (!pb.ok()) return pb.status().With("staging page " + std::to_string(pfn));
  std::memcpy(*pb, page, kPage);
  staged_pfns_->Commit(sizeof(uint64_t));
  staged_bytes_->Commit(kPage);
  slot_[pfn] = static_cast<uint32_t>(staged_count_++);
  return Status::Ok();
}

Status ImageSink::OnState(uint64_t epoch, std::span<const uint8_t> record) {
  ROMULUS_RETURN_IF_ERROR(CheckEpoch(epoch, "state"));
  if (record.size() > options_.max_state_bytes - staged_state_.size()) {
    return Status::OutOfRange("image sink: epoch " + std::to_string(epoch) + " state exceeds " +
                              std::to_string(options_.max_state_bytes) + " bytes");
  }
  staged_state_.insert(staged_state_.end(), record.begin(), record.end());
  staged_has_state_ = true;
  return Status::Ok();
}

Status ImageSink::OnDisk(uint64_t epoch, uint32_t disk_id, const protocol::DiskRecord& record) {
  ROMULUS_RETURN_IF_ERROR(CheckEpoch(epoch, "disk record"));
  const DiskState* disk = nullptr;
  for (const DiskState& d : session_disks_) {
    if (d.id == disk_id) disk = &d;
  }
  if (disk == nullptr) return Status::Corruption("image sink: record for unknown disk " + std::to_string(disk_id));
  // FLUSH records are not kept: the commit is the image's unit of durability.
  if (record.kind == protocol::DiskRecordKind::kFlush) return Status::Ok();
  Result<restore::DiskEntry> e = restore::DiskEntryFromRecord(disk_id, disk->size, record);
  if (!e.ok()) return e.status().With("image sink");
  if (direct_) {
    // First epoch: nothing committed can be hurt (Discard forces a resync).
    return ApplyDiskEntry(disk_fd(disk_id), *e, "writing disk " + disk_path(disk_id));
  }
  return disk_staged_->Stage(epoch, *e).With("image sink");
}

Status ImageSink::Commit(uint64_t epoch) {
  ROMULUS_RETURN_IF_ERROR(CheckEpoch(epoch, "commit"));
  Status s = EnsureApplied();
  if (!s.ok()) {
    ClearStaging();
    return s;
  }
  s = PrepareDiskDigests();
  if (!s.ok()) {
    if (direct_) need_resync_ = true;
    ClearStaging();
    return s.With("committing epoch " + std::to_string(epoch));
  }
  return direct_ ? CommitDirect(epoch) : CommitStaged(epoch);
}

Status ImageSink::CommitIncomplete(uint64_t epoch) {
  ROMULUS_RETURN_IF_ERROR(CheckEpoch(epoch, "commit"));
  if (!direct_) {
    // The receiver agrees to streaming copies only while nothing is
    // committed; a partial disk must never overwrite a checkpoint.
    ClearStaging();
    return Status::Corruption("image sink: epoch " + std::to_string(epoch) +
                              " leaves a disk partial, but the image holds committed epoch " +
                              std::to_string(last_committed_epoch()));
  }
  // A first sync in progress: the epoch's pages and disk records are in the
  // files already (the direct shortcut) and PATH.state still says "nothing
  // committed", which is what a restart must find. Its state blob is kept
  // for the first whole epoch, which may carry none.
  if (staged_has_state_) committed_state_.swap(staged_state_);
  ++incomplete_commits_;
  ClearStaging();
  return Status::Ok();
}

std::vector<protocol::DiskHeld> ImageSink::held_disks() const {
  std::vector<protocol::DiskHeld> out;
  if (!has_committed()) return out;
  for (const DiskState& d : committed_disks_) {
    // Only a disk known to hold what PATH.state says: synced with every
    // commit (--durable), or checked against its whole-disk digest at Open.
    // Without either a power loss could have undone writes a copy of the
    // changes would never repair; the whole copy does.
    if (d.lineage != 0 && (options_.durable || d.has_digest)) out.push_back({d.id, d.lineage, d.tag});
  }
  return out;
}

Status ImageSink::DescribeDisk(uint32_t disk_id, uint64_t first_chunk, std::span<protocol::ChunkHash> out) {
  for (const DiskState& d : session_disks_) {
    const int fd = disk_fd(disk_id);
    if (d.id == disk_id && fd >= 0) return restore::HashImageChunks(fd, d.size, first_chunk, out);
  }
  return Status::Unsupported("image sink: disk " + std::to_string(disk_id) + " is not open");
}

void ImageSink::StageDiskLineage(uint32_t disk_id, uint64_t lineage, uint64_t tag) {
  // Into the session's view of the disks, which the next commit stages
  // (PrepareDiskDigests) and, once committed, PATH.state records.
  for (DiskState& d : session_disks_) {
    if (d.id == disk_id) {
      d.lineage = lineage;
      d.tag = lineage != 0 ? tag : 0;
    }
  }
}

void ImageSink::FinishCommit(uint64_t epoch) {
  digest_value_.store(digest_->value(), std::memory_order_release);
  if (staged_has_state_) committed_state_.swap(staged_state_);  // capacity of both is kept
  committed_identity_ = session_identity_;
  session_disks_ = staged_disks_;
  committed_disks_ = staged_disks_;
  last_committed_.store(epoch, std::memory_order_release);
  has_committed_.store(true, std::memory_order_release);
  session_committed_ = true;
  ClearStaging();
}

// The PATH.state contents of the epoch being committed, computed before
// anything is committed (digest_ already includes its pages).
StateFile ImageSink::StagedStateFile() const {
  StateFile sf;
  sf.committed = true;
  sf.pages = pages_;
  sf.identity = session_identity_;
  sf.epoch = staging_epoch_;
  sf.digest = digest_->value();
  sf.state = staged_has_state_ ? staged_state_ : committed_state_;
  sf.disks = staged_disks_;
  return sf;
}

Status ImageSink::WriteStateFile(const StateFile& sf, bool committing) {
  EncodeStateFile(sf, &state_file_buf_);
  ROMULUS_RETURN_IF_ERROR(WriteStateTmp(state_path(), state_file_buf_, options_.durable));
  if (committing) CrashIfAt(options_.crash_at, CommitStep::kStateTmp);
  return InstallStateTmp(state_path(), options_.durable);
}

// First epoch: the pages are in the image already; the commit is PATH.state
// saying so. Until that rename nothing was committed, so a failure commits
// nothing and the session must resync (the image holds an unfinished epoch).
Status ImageSink::CommitDirect(uint64_t epoch) {
  if (fd_ >= 0) {
    Status s;
    if (options_.durable && ::fdatasync(fd_) != 0) s = Status::StorageErrno("syncing image " + options_.path, errno);
    if (s.ok() && options_.durable) s = SyncDisks();
    if (s.ok()) s = WriteStateFile(StagedStateFile(), /*committing=*/true);
    if (!s.ok()) {
      need_resync_ = true;
      ClearStaging();
      return s.With("committing epoch " + std::to_string(epoch));
    }
    CrashIfAt(options_.crash_at, CommitStep::kStateRename);
  }
  FinishCommit(epoch);
  return Status::Ok();
}

}  // namespace romulus::sim
