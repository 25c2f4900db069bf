#include "disk/sync_copier.h"

#include <algorithm>

namespace romulus::disk {

bool SyncMayCopy(uint64_t open_bytes, uint64_t budget, uint64_t copied_this_epoch, uint64_t allowance,
                 uint64_t chunk) {
  if (chunk == 0) return false;
  // Overflow-free forms of open + chunk <= budget / 2 and copied + chunk <= allowance.
  const uint64_t half = budget / 2;
  if (open_bytes > half || chunk > half - open_bytes) return false;
  if (copied_this_epoch > allowance || chunk > allowance - copied_this_epoch) return false;
  return true;
}

SyncCopier::SyncCopier(EpochDiskLog* log, EpochCounter* clock, BackingStore* store, FrontEndHold* hold,
                       SyncCopierOptions options, std::shared_ptr<const protocol::DiskChunkTable> backup)
    : log_(log),
      clock_(clock),
      store_(store),
      hold_(hold),
      options_(options),
      total_(store->size()),
      // A table that does not describe this disk is not used (the receiver
      // checked it against the same size: this is a belt, not a rule).
      backup_(backup && backup->size() == protocol::DiskChunks(total_) ? std::move(backup) : nullptr) {}

uint32_t SyncCopier::permille() const {
  if (total_ == 0) return 1000;
  return static_cast<uint32_t>(std::min<uint64_t>(1000, next_ * 1000 / total_));  // exact below 16 PiB
}

Result<bool> SyncCopier::Step(std::chrono::steady_clock::time_point hold_deadline) {
  if (done()) return false;
  if (backup_) return StepCompared(hold_deadline);
  const uint64_t n = std::min<uint64_t>(options_.chunk_bytes, total_ - next_);
  // Data bytes the chunk may add at most (zero blocks add none).
  if (!SyncMayCopy(log_->open_bytes(), log_->budget_bytes(), copied_this_epoch_, options_.epoch_allowance, n)) {
    return false;
  }
  ROMULUS_RETURN_IF_ERROR(hold_->Hold(hold_deadline).With("disk sync copy"));
  // Under the hold no request holds a tag: this one is the newest, so every
  // write before it is tagged <= it and every write after it >= it.
  const uint64_t tag = clock_->Acquire();
  // Under the hold the store's holes are stable: a hole, however long, is
  // one ZERO record, read from nowhere and charged nothing (it adds no data).
  uint64_t len = n, charged = n;
  const uint64_t data_at = store_->DataFrom(next_);
  if (data_at > next_) {
    len = std::min(data_at, total_) - next_;
    charged = 0;
  }
  Status st = log_->CaptureRange(tag, store_, next_, len);
  clock_->Release(tag);
  hold_->Unhold();
  ROMULUS_RETURN_IF_ERROR(st);
  next_ += len;
  copied_this_epoch_ += charged;
  last_tag_ = tag;
  if (done()) complete_epoch_ = tag;
  return true;
}

// With the backup's table: one table chunk per step (the table's grain), and
// under the same hold a run of further hole chunks the backup holds as
// zeros (read from nowhere), so an empty disk is walked in few holds. At most
// one chunk is read per hold: the hold keeps the guest's requests waiting
// and its tag keeps the epoch from sealing. Paced as a full chunk: whether
// it is left out is known only once read.
Result<bool> SyncCopier::StepCompared(std::chrono::steady_clock::time_point hold_deadline) {
  const uint64_t n = std::min<uint64_t>(protocol::kDiskChunkBytes, total_ - next_);
  if (!SyncMayCopy(log_->open_bytes(), log_->budget_bytes(), copied_this_epoch_, options_.epoch_allowance, n)) {
    return false;
  }
  ROMULUS_RETURN_IF_ERROR(hold_->Hold(hold_deadline).With("disk sync copy"));
  const uint64_t tag = clock_->Acquire();
  Status st;
  uint64_t charged = 0;
  // At most this many chunks per hold: the guest's requests wait meanwhile.
  constexpr int kMaxChunksPerHold = 64;
  for (int k = 0; k < kMaxChunksPerHold && next_ < total_ && st.ok(); ++k) {
    const uint64_t len = std::min<uint64_t>(protocol::kDiskChunkBytes, total_ - next_);
    if (k > 0 && store_->DataFrom(next_) < next_ + len) break;  // would be read: the next hold's
    uint64_t skipped = 0;
    st = log_->CaptureUnlike(tag, store_, next_, len, *backup_, &skipped);
    if (!st.ok()) break;
    next_ += len;
    skipped_ += skipped;
    if (skipped != len) {
      charged = len;  // this one carried records: the step ends with it
      break;
    }
  }
  clock_->Release(tag);
  hold_->Unhold();
  ROMULUS_RETURN_IF_ERROR(st);
  copied_this_epoch_ += charged;
  last_tag_ = tag;
  if (done()) complete_epoch_ = tag;
  return true;
}

}  // namespace romulus::disk
