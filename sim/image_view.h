// ImageView: what an ImageSink's files recover to, computed without changing
// them (romulus verify). Opens everything O_RDONLY, takes no lock, creates
// nothing: a pending complete journal record is applied to a private
// copy-on-write mapping of the image, exactly as the sink's Open would apply
// it on disk; an incomplete one is ignored, as Open would drop it.
//
// A backup committing at the same moment may be caught mid-commit (the view
// is then inconsistent and says so): inspect a stopped backup, or one whose
// guest was activated.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "sim/image_journal.h"

namespace romulus::sim {

class ImageView {
 public:
  ~ImageView();
  ImageView(const ImageView&) = delete;
  ImageView& operator=(const ImageView&) = delete;

  // InvalidArgument when there is no image or it holds no committed
  // checkpoint; Corruption when its files contradict each other.
  static Result<std::unique_ptr<ImageView>> Open(const std::string& path, size_t max_state_bytes = size_t{1} << 20);

  uint64_t epoch() const { return epoch_; }
  uint64_t guest_pages() const { return pages_; }
  uint64_t recorded_digest() const { return recorded_digest_; }  // from PATH.state (or the journal)
  const std::string& identity() const { return identity_; }
  const std::vector<uint8_t>& state() const { return state_; }
  const uint8_t* image() const { return image_; }
  // false: pfn is a hole of the image file the journal does not touch, so it
  // reads as zeros; checking it needs no read (a sparse 64 GiB image is
  // verified at the cost of its data).
  bool MayHoldData(uint64_t pfn) const {
    return pfn < pages_ && ((maybe_data_[pfn >> 6] >> (pfn & 63)) & 1) != 0;
  }
  // How the checkpoint was found: "" (clean), or a sentence about the journal.
  const std::string& note() const { return note_; }
  bool from_journal() const { return from_journal_; }

  // The checkpoint's disks (PATH.state, or the pending journal record's).
  const std::vector<DiskState>& disks() const { return disks_; }
  // Reads [offset, offset + out.size()) of disk `id` as the checkpoint has
  // it: PATH.disk<id>, with a pending complete journal record's disk
  // records laid over it in order (in this process only). InvalidArgument
  // for an unknown disk or a range outside it.
  Status ReadDisk(uint32_t id, uint64_t offset, std::span<uint8_t> out) const;
  // The whole-disk digest (DiskFileDigest's rule) of disk `id` as ReadDisk sees it.
  Result<uint64_t> DiskDigest(uint32_t id) const;

 private:
  ImageView() = default;
  uint64_t epoch_ = 0, pages_ = 0, recorded_digest_ = 0;
  std::string identity_;
  std::vector<uint8_t> state_;
  uint8_t* image_ = nullptr;
  std::vector<uint64_t> maybe_data_;  // one bit per page: a data range of the file, or a journal page
  std::string note_;
  bool from_journal_ = false;
  std::string path_;
  std::vector<DiskState> disks_;
  // The disk records of a complete pending journal record, in order: where
  // each applies and where its data lies in the journal (read when a
  // ReadDisk overlaps it; the section itself may be far larger than memory).
  struct PendingDiskEntry {
    uint32_t disk_id = 0;
    uint8_t kind = 0;
    uint64_t offset = 0, length = 0;
    uint64_t data_at = 0;  // journal offset of a write's bytes
  };
  std::vector<PendingDiskEntry> pending_disk_;
  int journal_fd_ = -1;  // open while pending_disk_ has writes
};

}  // namespace romulus::sim
