// ImageSink: the journaled commit of a staged epoch, discard and activation.
// The protocol, step by step, is in docs/IMAGE-FORMAT.md; the CommitStep
// kill-points below mark its steps.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/statvfs.h>
#include <sys/uio.h>
#include <spdlog/spdlog.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>

#include "sim/image_files.h"
#include "sim/image_sink.h"
#include "sim/sim_spec.h"

namespace romulus::sim {

namespace {
constexpr uint64_t kPage = kImagePage;
constexpr size_t kMaxIov = 256;  // pages per pwritev (well below IOV_MAX)
using restore::kReserveMargin;  // free space above which a commit does not reserve blocks
constexpr uint32_t kNoSlot = UINT32_MAX;
}  // namespace

Status ImageSink::CommitStaged(uint64_t epoch) {
  const uint8_t* bytes = staged_bytes_->data();
  const uint8_t* pfns = staged_pfns_->data();
  // The new digest is computed now (it goes into the record's PATH.state);
  // before the commit point RollBackDigest undoes it from the untouched image.
  for (uint64_t i = 0; i < staged_count_; ++i) {
    uint64_t pfn;
    std::memcpy(&pfn, pfns + i * sizeof(uint64_t), sizeof pfn);
    digest_->Update(pfn, bytes + i * kPage);
  }
  if (fd_ < 0) {  // memory image: nothing to survive a crash
    for (uint64_t i = 0; i < staged_count_; ++i) {
      uint64_t pfn;
      std::memcpy(&pfn, pfns + i * sizeof(uint64_t), sizeof pfn);
      std::memcpy(image_ + pfn * kPage, bytes + i * kPage, kPage);
    }
    // In-memory disks (memfds): applied with the pages; only memory
    // exhaustion can fail here, and then the digest check of the next
    // verify would tell.
    Status s = ApplyDiskSection();
    FinishCommit(epoch);
    return s;
  }
  // Up to the commit point, a failure leaves the previous checkpoint as it
  // was, on disk and here.
  Status s = WriteRecord();
  if (s.ok()) s = ReserveImageBlocks();
  if (s.ok()) {
    s = WriteStateTmp(state_path(), state_file_buf_, options_.durable);
    if (s.ok()) CrashIfAt(options_.crash_at, CommitStep::kStateTmp);
  }
  if (s.ok() && options_.durable && ::fdatasync(journal_fd_) != 0) s = Status::StorageErrno("syncing the journal", errno);
  if (s.ok()) {
    std::vector<uint8_t> marker = BuildJournalMarker(epoch, record_hash_);
    s = PwriteAll(journal_fd_, marker.data(), marker.size(), layout_.marker_offset, "writing the commit marker");
    if (s.ok() && options_.durable && ::fdatasync(journal_fd_) != 0) {
      s = Status::StorageErrno("syncing the commit marker", errno);
    }
  }
  if (!s.ok()) return FailBeforeCommitPoint(s, epoch);
  CrashIfAt(options_.crash_at, CommitStep::kJournalMarker);

  // Committed: the journal holds N. A failure from here on leaves N committed
  // and its apply pending (re-run before the sink's next use, or at Open).
  s = ApplyStaged();
  if (s.ok()) CrashIfAt(options_.crash_at, CommitStep::kApplied);
  if (s.ok()) s = InstallStateTmp(state_path(), options_.durable);
  if (s.ok()) CrashIfAt(options_.crash_at, CommitStep::kStateRename);
  if (s.ok()) s = ResetJournal(journal_fd_, options_.durable);
  FinishCommit(epoch);
  if (!s.ok()) {
    replay_pending_ = true;
    return s.With("epoch " + std::to_string(epoch) + " is committed in " + journal_path() +
                  " but applying it failed (it is re-applied before the next commit or at restart)");
  }
  CrashIfAt(options_.crash_at, CommitStep::kJournalReset);
  return Status::Ok();
}

// Appends the redo record (head, pages) to the empty journal; no marker yet.
Status ImageSink::WriteRecord() {
  if (journal_fd_ < 0) {
    journal_fd_ = ::open(journal_path().c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (journal_fd_ < 0) return Status::StorageErrno("creating " + journal_path(), errno);
    // A record in a file whose name is lost at power-off protects nothing.
    if (options_.durable) ROMULUS_RETURN_IF_ERROR(SyncDirOf(journal_path()));
  }
  const uint8_t* bytes = staged_bytes_->data();
  const uint8_t* pfns = staged_pfns_->data();
  record_pfns_.resize(staged_count_);
  for (uint64_t i = 0; i < staged_count_; ++i) {
    uint64_t pfn;
    std::memcpy(&pfn, pfns + i * sizeof(uint64_t), sizeof pfn);
    record_pfns_[i] = IsZeroImagePage(bytes + i * kPage) ? (pfn | kJournalZeroPage) : pfn;
  }
  EncodeStateFile(StagedStateFile(), &state_file_buf_);
  const uint64_t disk_bytes = disk_staged_ ? disk_staged_->size() : 0;
  BuildJournalHead(staging_epoch_, pages_, record_pfns_, state_file_buf_, &layout_, disk_bytes,
                   !session_disks_.empty());
  std::unique_ptr<XXH3_state_t, decltype(&XXH3_freeState)> h(XXH3_createState(), XXH3_freeState);
  if (!h) return Status::Internal("journal: XXH3 state");
  XXH3_64bits_reset(h.get());
  XXH3_64bits_update(h.get(), layout_.head.data(), layout_.head.size());
  XXH3_64bits_update(h.get(), bytes, staged_count_ * kPage);
  ROMULUS_RETURN_IF_ERROR(PwriteAll(journal_fd_, layout_.head.data(), layout_.head.size(), 0, "writing the journal"));
  const uint64_t half = staged_count_ / 2;
  ROMULUS_RETURN_IF_ERROR(PwriteAll(journal_fd_, bytes, half * kPage, layout_.pages_offset, "writing the journal"));
  CrashIfAt(options_.crash_at, CommitStep::kJournalPages);
  ROMULUS_RETURN_IF_ERROR(PwriteAll(journal_fd_, bytes + half * kPage, (staged_count_ - half) * kPage,
                                    layout_.pages_offset + half * kPage, "writing the journal"));
  if (disk_bytes > 0) {
    // The epoch's disk records: the same record, the same marker, hashed as
    // they are copied (a spilled epoch is read back once, in pieces).
    uint64_t at = layout_.disk_offset;
    ROMULUS_RETURN_IF_ERROR(disk_staged_->ForEachPiece([&](std::span<const uint8_t> piece) -> Status {
      XXH3_64bits_update(h.get(), piece.data(), piece.size());
      ROMULUS_RETURN_IF_ERROR(PwriteAll(journal_fd_, piece.data(), piece.size(), at, "writing the journal"));
      at += piece.size();
      return Status::Ok();
    }));
  }
  record_hash_ = XXH3_64bits_digest(h.get());
  CrashIfAt(options_.crash_at, CommitStep::kJournalBody);
  return Status::Ok();
}

// Allocates, before the commit point, the image blocks the apply will write,
// so running out of space is a failed commit, not a half-applied one. Blocks
// we wrote before (allocated_) are overwritten in place; only the others are
// reserved, in runs of adjacent pfns. (A copy-on-write filesystem allocates
// on every overwrite: there the reservation cannot be complete.)
Status ImageSink::ReserveImageBlocks() {
  if (!reserve_supported_) return Status::Ok();
  sorted_pfns_.clear();
  for (uint64_t e : record_pfns_) {
    if ((e & kJournalZeroPage) == 0 && !TestBit(allocated_, e)) sorted_pfns_.push_back(e);
  }
  // Disk writes need their blocks too (those already allocated cost
  // nothing to reserve again).
  const uint64_t disk_need = disk_staged_ ? disk_staged_->write_bytes() : 0;
  if (sorted_pfns_.empty() && disk_need == 0) return Status::Ok();
  // Plenty of free space: the apply cannot run out, skip the fallocate calls
  // (each costs an extent update). Should another writer eat the margin
  // anyway, the apply fails after the commit point: N stays committed in the
  // journal and is re-applied, still one checkpoint.
  struct statvfs vfs;
  const uint64_t need = sorted_pfns_.size() * kPage + disk_need;
  if (::fstatvfs(fd_, &vfs) == 0 && uint64_t{vfs.f_bavail} * vfs.f_frsize > 2 * need + kReserveMargin) {
    return Status::Ok();
  }
  std::sort(sorted_pfns_.begin(), sorted_pfns_.end());
  for (size_t i = 0; i < sorted_pfns_.size() && reserve_supported_;) {
    size_t j = i + 1;
    while (j < sorted_pfns_.size() && sorted_pfns_[j] == sorted_pfns_[j - 1] + 1) ++j;
    ROMULUS_RETURN_IF_ERROR(ReserveFileRange(fd_, sorted_pfns_[i] * kPage, (j - i) * kPage, &reserve_supported_, "reserving image space")
                                .With("image " + options_.path));
    i = j;
  }
  if (disk_need > 0 && reserve_supported_) {
    ROMULUS_RETURN_IF_ERROR(disk_staged_->ReserveWrites([&](uint32_t id) { return disk_fd(id); }, &reserve_supported_)
                                .With("image " + options_.path));
  }
  return Status::Ok();
}

// Writes the staged pages in pfn order, each run of adjacent non-zero pages
// with one pwritev; zero pages become holes (or stay holes).
Status ImageSink::ApplyStaged() {
  const uint8_t* bytes = staged_bytes_->data();
  apply_order_.resize(staged_count_);
  for (uint64_t i = 0; i < staged_count_; ++i) apply_order_[i] = i;
  std::sort(apply_order_.begin(), apply_order_.end(), [&](uint64_t a, uint64_t b) {
    return (record_pfns_[a] & ~kJournalZeroPage) < (record_pfns_[b] & ~kJournalZeroPage);
  });
  const uint64_t half = staged_count_ / 2;
  bool crashed_half = false;
  std::vector<iovec> iov;
  for (uint64_t i = 0; i < staged_count_;) {
    if (!crashed_half && i >= half) {
      crashed_half = true;
      CrashIfAt(options_.crash_at, CommitStep::kApplyHalf);
    }
    const uint64_t e = record_pfns_[apply_order_[i]];
    const uint64_t pfn = e & ~kJournalZeroPage;
    if (e & kJournalZeroPage) {
      if (TestBit(allocated_, pfn)) ROMULUS_RETURN_IF_ERROR(PunchImagePage(fd_, pfn));
      SetBit(allocated_, pfn, false);
      ++i;
      continue;
    }
    iov.clear();
    uint64_t j = i;
    while (j < staged_count_ && iov.size() < kMaxIov && record_pfns_[apply_order_[j]] == pfn + (j - i)) {
      iov.push_back({const_cast<uint8_t*>(bytes + apply_order_[j] * kPage), kPage});
      SetBit(allocated_, pfn + (j - i), true);
      ++j;
    }
    ROMULUS_RETURN_IF_ERROR(PwritevAll(fd_, iov, pfn * kPage, "applying to image " + options_.path));
    i = j;
  }
  if (!crashed_half) CrashIfAt(options_.crash_at, CommitStep::kApplyHalf);  // a state-only epoch
  // The disk records, after the pages, in stream order (what the replay does).
  ROMULUS_RETURN_IF_ERROR(ApplyDiskSection());
  if (options_.durable && ::fdatasync(fd_) != 0) return Status::StorageErrno("syncing image " + options_.path, errno);
  if (options_.durable) ROMULUS_RETURN_IF_ERROR(SyncDisks());
  return Status::Ok();
}

Status ImageSink::ApplyDiskSection() {
  if (!disk_staged_ || disk_staged_->empty()) return Status::Ok();
  return disk_staged_->ForEachEntry([&](const DiskEntry& e) {
    return ApplyDiskEntry(disk_fd(e.disk_id), e, "applying to disk " + disk_path(e.disk_id));
  });
}

Status ImageSink::SyncDisks() {
  for (const DiskState& d : session_disks_) {
    if (::fdatasync(disk_fd(d.id)) != 0) return Status::StorageErrno("syncing disk " + disk_path(d.id), errno);
  }
  return Status::Ok();
}

// What PATH.state will say about the disks once the staged epoch commits,
// computed before the commit point without touching a disk file: the first
// epoch (written directly) is hashed whole; a journaled epoch changes each
// digest by the blocks it touches, whose old bytes are read from the file
// and whose new bytes are the records replayed on them in order. Memory: at
// most one 4 KiB copy per touched block of a digested disk (bounded by
// kMaxDigestedDisk per disk).
Status ImageSink::PrepareDiskDigests() {
  staged_disks_ = session_disks_;
  if (session_disks_.empty()) return Status::Ok();
  if (direct_) {
    for (DiskState& d : staged_disks_) {
      if (!d.has_digest) continue;
      Result<uint64_t> dg = DiskFileDigest(disk_fd(d.id), d.size);
      if (!dg.ok()) return dg.status().With("disk " + disk_path(d.id));
      d.digest = *dg;
    }
    return Status::Ok();
  }
  if (!disk_staged_ || disk_staged_->empty()) return Status::Ok();
  // Only digested disks (at most kMaxDigestedDisk each) need the walk: a
  // large spilled epoch of undigested disks is not read for it.
  if (std::none_of(staged_disks_.begin(), staged_disks_.end(), [](const DiskState& d) { return d.has_digest; })) {
    return Status::Ok();
  }
  std::map<std::pair<size_t, uint64_t>, std::vector<uint8_t>> work;
  std::vector<uint64_t> delta(staged_disks_.size(), 0);  // mod 2^64, like the digest
  ROMULUS_RETURN_IF_ERROR(disk_staged_->ForEachEntry([&](const DiskEntry& e) -> Status {
    size_t idx = 0;
    while (idx < staged_disks_.size() && staged_disks_[idx].id != e.disk_id) ++idx;
    if (idx == staged_disks_.size()) return Status::Corruption("staged record for unknown disk");
    const DiskState& d = staged_disks_[idx];
    if (!d.has_digest) return Status::Ok();
    const uint64_t end = e.offset + e.length;
    for (uint64_t b = e.offset / kPage; b * kPage < end; ++b) {
      auto [it, fresh] = work.try_emplace({idx, b});
      std::vector<uint8_t>& blk = it->second;
      if (fresh) {
        blk.assign(kPage, 0);
        const uint64_t n = std::min<uint64_t>(kPage, d.size - b * kPage);
        ROMULUS_RETURN_IF_ERROR(PreadAll(disk_fd(d.id), blk.data(), n, b * kPage, "reading disk " + disk_path(d.id)));
        delta[idx] -= DiskBlockHash(b, blk.data());
      }
      const uint64_t lo = std::max(e.offset, b * kPage), hi = std::min(end, (b + 1) * kPage);
      if (e.kind == kDiskEntryWrite) {
        std::memcpy(blk.data() + (lo - b * kPage), e.data + (lo - e.offset), hi - lo);
      } else {
        std::memset(blk.data() + (lo - b * kPage), 0, hi - lo);
      }
    }
    return Status::Ok();
  }));
  for (const auto& [key, blk] : work) delta[key.first] += DiskBlockHash(key.second, blk.data());
  for (size_t i = 0; i < staged_disks_.size(); ++i) staged_disks_[i].digest += delta[i];
  return Status::Ok();
}

Status ImageSink::FailBeforeCommitPoint(const Status& s, uint64_t epoch) {
  RollBackDigest();
  // The record has no marker, so it is already void; zeroing its header
  // makes that obvious to the next Open (best effort: a failing disk may
  // refuse this too, and the record stays void anyway).
  if (journal_fd_ >= 0) (void)ResetJournal(journal_fd_, false);
  ::unlink((state_path() + ".tmp").c_str());
  ClearStaging();
  spdlog::warn("image {}: commit of epoch {} failed before its commit point, still holding epoch {}: {}",
               options_.path, epoch, last_committed_epoch(), s.ToString());
  return s.With("committing epoch " + std::to_string(epoch) + " (still holding epoch " +
                std::to_string(last_committed_epoch()) + ")");
}

// The image still holds the previous epoch: re-hash the staged pfns from it.
// If even that read fails the digest is recomputed from scratch.
void ImageSink::RollBackDigest() {
  const uint8_t* pfns = staged_pfns_->data();
  std::vector<uint8_t> page(kPage);
  for (uint64_t i = 0; i < staged_count_; ++i) {
    uint64_t pfn;
    std::memcpy(&pfn, pfns + i * sizeof(uint64_t), sizeof pfn);
    if (!ReadPages(pfn, 1, page.data()).ok()) {
      ResetDigestFromImage();
      return;
    }
    digest_->Update(pfn, page.data());
  }
}

void ImageSink::ClearStaging() {
  if (staged_pfns_) {
    const uint8_t* pfns = staged_pfns_->data();
    for (uint64_t i = 0; i < staged_count_; ++i) {
      uint64_t pfn;
      std::memcpy(&pfn, pfns + i * sizeof(uint64_t), sizeof pfn);
      slot_[pfn] = kNoSlot;
    }
    staged_pfns_->Clear();
    staged_bytes_->Clear();
  }
  staged_count_ = 0;
  if (disk_staged_) disk_staged_->Clear();
  staged_state_.clear();
  staged_has_state_ = false;
  staging_active_ = false;
  direct_ = false;
}

void ImageSink::Discard() {
  // A discarded first epoch has already been written into the image (the
  // shortcut): the image is no longer a clean base for the session's later
  // epochs, so only a new session, which resyncs everything, may continue.
  if (staging_active_ && direct_) need_resync_ = true;
  ClearStaging();
}

Status ImageSink::Activate(const std::string& reason) {
  Discard();
  if (!has_committed()) {
    return Status::InvalidArgument("image sink: cannot activate (" + reason + "): no epoch was ever committed");
  }
  if (activated_) return Status::InvalidArgument("image sink: already activated");
  ROMULUS_RETURN_IF_ERROR(EnsureApplied().With("image sink: cannot activate (" + reason + ")"));
  Result<SimSpec> spec = ParseSimSpec(committed_identity_);
  if (!spec.ok()) {
    return Status::Unsupported("image sink: can only resume a simulated guest, not '" + committed_identity_ +
                               "': " + spec.status().message());
  }
  if (spec->pages() != pages_) {
    return Status::Corruption("image sink: committed identity '" + committed_identity_ +
                              "' does not match the image's " + std::to_string(pages_) + " pages");
  }
  Result<std::unique_ptr<SimGuest>> guest =
      SimGuest::Restore(*spec, std::span<const uint8_t>(image_, pages_ * kPage), committed_state_);
  if (!guest.ok()) {
    return guest.status().With("resuming the guest from epoch " + std::to_string(last_committed_epoch()));
  }
  if (spec->disk_bytes > 0) {
    // The guest continues on its disk as of the same checkpoint (the
    // journal was applied above): the first committed disk is its disk.
    if (committed_disks_.empty()) {
      return Status::Corruption("image sink: guest '" + committed_identity_ +
                                "' has a disk but the committed checkpoint holds none");
    }
    // It runs on a copy (PATH.disk<id>.live, or an anonymous file): the
    // checkpoint's files stay exactly epoch N, as the memory image does while
    // the resumed guest runs in its own memory, so a drill's checkpoint stays
    // verifiable after the failover. (A real guest's disk is its backup copy
    // itself: docs/DISK.md §8.)
    const uint32_t id = committed_disks_.front().id;
    const uint64_t size = committed_disks_.front().size;
    int live = options_.path.empty()
                   ? ::memfd_create("romulus-live-disk", MFD_CLOEXEC)
                   : ::open((disk_path(id) + ".live").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (live < 0) return Status::Storage("image sink: creating the resumed guest's disk: " + std::string(std::strerror(errno)));
    Status copied = CopySparse(disk_fd(id), live, size, "image sink: copying the checkpoint's disk for the resumed guest");
    const std::string where = options_.path.empty() ? "/proc/self/fd/" + std::to_string(live) : disk_path(id) + ".live";
    if (copied.ok()) {
      copied = (options_.open_activated_disk ? options_.open_activated_disk(**guest, where) : (*guest)->OpenDisk(where))
                   .With("resuming the guest's disk");
    }
    ::close(live);  // OpenDisk has its own descriptor
    ROMULUS_RETURN_IF_ERROR(copied);
  }
  if (options_.run_activated) ROMULUS_RETURN_IF_ERROR((*guest)->Start());
  activated_ = std::move(*guest);
  activation_reason_ = reason;
  spdlog::warn("failover: resumed {} from epoch {} (digest {}): {}", committed_identity_, last_committed_epoch(),
               DigestHex(digest()), reason);
  return Status::Ok();
}

}  // namespace romulus::sim
