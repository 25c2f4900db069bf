// ImageSink: the backup's GuestSink for the simulated guest (and any guest
// whose checkpoint is "memory image + opaque state").
//
// The image is a file (--image PATH) mapped MAP_SHARED and sized to the
// guest, or, with an empty path, anonymous memory (tests, benchmarks). Next
// to it, PATH.state holds what the image is: the guest size, its identity,
// the last committed epoch, the state blob of that epoch and the image's
// memory digest. PATH.state is replaced atomically (write PATH.state.tmp,
// rename) at every commit.
//
// Staging. Pages of the epoch being received are copied into two reusable
// ReceiveBuffers (pfns, page bytes) whose capacity is kept across epochs, so
// after the largest epoch has been seen no further allocation happens
// (staging_reallocations() stops moving). A pfn sent twice in one epoch
// overwrites its staged slot (a per-pfn slot index, 4 bytes per guest page),
// so staging never exceeds one copy of the guest: memory is bounded by one
// epoch's dirty set, at most the guest size. Commit(N) copies the staged
// pages into the image, installs the staged state, bumps the committed epoch
// and updates the digest from the applied pages; Discard() drops staging and
// leaves the image at the last commit.
//
// First-epoch shortcut. Until the first commit the image holds nothing anyone
// could resume from (Activate refuses), so the pages of that epoch, the full
// synchronisation, are written straight into the image: no guest-sized
// staging for the largest epoch of all. Once anything is committed, every
// later epoch (including a resync after a reconnect) is staged.
//
// digest() is the MemoryDigest of the image as it is (always equal to a
// from-scratch digest of the file), updated O(applied pages) per epoch; after
// Commit(N) it equals the primary's digest at N.
//
// Sessions and sizes. BeginSession with the size the image already has keeps
// the committed data (it is what failover would use until the new session
// commits). A different size is refused while the image holds committed data
// unless options.start_over; without committed data the image is simply
// resized (and zeroed). Open() refuses a non-empty existing file that has no
// valid PATH.state (it is not ours: never overwrite an unknown file) unless
// start_over. An image whose digest does not match PATH.state (the previous
// backup stopped in the middle of applying a commit) is treated as holding
// no committed data, and recovery_note() says so.
//
// Durability: by default a commit survives the backup process dying (the
// page cache holds the mapping); options.durable adds msync + fsync per
// commit so it also survives the host losing power, at a cost per epoch.
//
// Activation resumes a simulated guest: the committed identity is parsed as a
// SimSpec and a SimGuest is restored from the image and the committed state,
// then (options.run_activated) its workload thread started.
//
// Threading: the GuestSink calls come from one thread (the receiver);
// has_committed(), last_committed_epoch() and digest() may be read from any.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "buffer/receive_buffer.h"
#include "common/digest.h"
#include "common/status.h"
#include "restore/guest_sink.h"
#include "sim/sim_guest.h"

namespace romulus::sim {

struct ImageSinkOptions {
  std::string path;          // "" = anonymous memory, no state file
  bool start_over = false;   // ignore/discard whatever an existing image holds
  bool durable = false;      // msync the image and fsync PATH.state at every commit
  bool run_activated = true; // Activate() starts the resumed guest's workload thread
  size_t max_state_bytes = size_t{1} << 20;  // per epoch; more is OutOfRange
};

class ImageSink : public restore::GuestSink {
 public:
  static Result<std::unique_ptr<ImageSink>> Open(const ImageSinkOptions& options);
  ~ImageSink() override;

  ImageSink(const ImageSink&) = delete;
  ImageSink& operator=(const ImageSink&) = delete;

  // GuestSink.
  Status BeginSession(uint64_t guest_pages, const std::string& identity) override;
  // Corruption for pfn >= guest pages, an epoch at or below the last one
  // committed in this session, or pages of two epochs mixed in one staging.
  Status OnPage(uint64_t epoch, uint64_t pfn, const uint8_t* page) override;
  // The epoch's state is the concatenation of its state records; an epoch
  // without any keeps the previous epoch's state.
  Status OnState(uint64_t epoch, std::span<const uint8_t> record) override;
  // The image is updated before PATH.state is written: if writing PATH.state
  // fails, the epoch is committed in this process but not on disk, and the
  // error is returned (the receiver must not ack it).
  Status Commit(uint64_t epoch) override;
  void Discard() override;
  Status Activate(const std::string& reason) override;
  bool has_committed() const override { return has_committed_.load(std::memory_order_acquire); }
  uint64_t last_committed_epoch() const override { return last_committed_.load(std::memory_order_acquire); }

  // MemoryDigest value of the image (see above).
  uint64_t digest() const { return digest_value_.load(std::memory_order_acquire); }
  // From scratch, O(size): for verification.
  uint64_t ComputeImageDigest() const;
  uint64_t guest_pages() const { return pages_; }
  const uint8_t* image() const { return image_; }
  const std::string& path() const { return options_.path; }
  std::string state_path() const { return options_.path + ".state"; }
  // The committed epoch's identity and state blob.
  const std::string& committed_identity() const { return committed_identity_; }
  std::span<const uint8_t> committed_state() const { return committed_state_; }
  // Pages staged for the epoch in progress (0 in the first-epoch shortcut).
  uint64_t staged_pages() const { return staged_count_; }
  // Growths of the staging buffers since Open (all sizes, all sessions).
  uint64_t staging_reallocations() const;
  // Why an existing image was not taken as committed ("" if it was, or new).
  const std::string& recovery_note() const { return recovery_note_; }
  // The guest Activate() resumed (nullptr before); owned by the sink.
  SimGuest* activated_guest() { return activated_.get(); }
  const std::string& activation_reason() const { return activation_reason_; }

 private:
  explicit ImageSink(const ImageSinkOptions& options);
  Status LoadExisting();
  Status MapImage(uint64_t pages, bool zero);
  void UnmapImage();
  Status ResetDigestFromImage();
  Status WriteStateFile(bool committed);
  Status CheckEpoch(uint64_t epoch, const char* what);
  void ClearStaging();

  ImageSinkOptions options_;
  int fd_ = -1;
  uint8_t* image_ = nullptr;
  uint64_t pages_ = 0;
  std::unique_ptr<MemoryDigest> digest_;
  std::atomic<uint64_t> digest_value_{0};

  // Committed.
  std::atomic<bool> has_committed_{false};
  std::atomic<uint64_t> last_committed_{0};
  std::string committed_identity_;
  std::vector<uint8_t> committed_state_;

  // Session.
  bool in_session_ = false;
  bool session_committed_ = false;  // a commit happened in this session
  bool need_resync_ = false;        // a directly written first epoch was discarded
  std::string session_identity_;

  // Staging (epoch being received).
  bool staging_active_ = false;
  bool direct_ = false;  // first-epoch shortcut in use for this epoch
  uint64_t staging_epoch_ = 0;
  std::unique_ptr<buffer::ReceiveBuffer> staged_pfns_;   // uint64_t per staged page
  std::unique_ptr<buffer::ReceiveBuffer> staged_bytes_;  // 4096 bytes per staged page
  std::unique_ptr<uint32_t[]> slot_;                     // pfn -> staged slot, or kNoSlot
  uint64_t staged_count_ = 0;
  uint64_t retired_reallocations_ = 0;  // from staging buffers of earlier sizes
  std::vector<uint8_t> staged_state_;
  bool staged_has_state_ = false;

  std::vector<uint8_t> state_file_buf_;  // reused at every commit
  std::string recovery_note_;
  std::unique_ptr<SimGuest> activated_;
  std::string activation_reason_;
};

}  // namespace romulus::sim
