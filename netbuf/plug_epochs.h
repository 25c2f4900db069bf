// PlugEpochs: which sch_plug command each OutputCommit call turns into. Kept
// apart from the netlink code so the rule can be tested on any kernel.
//
// sch_plug keeps ONE closed boundary (pkts_last_epoch) plus the open buffer
// (pkts_current_epoch). A second TCQ_PLUG_BUFFER before a RELEASE_ONE would
// overwrite the first boundary's packet count: those packets would then only
// leave on RELEASE_INDEFINITE. So:
//   Checkpoint(N), slot free      -> BUFFER, the slot holds N
//   Checkpoint(N), slot taken     -> nothing: N's output stays in the open
//                                    buffer and joins the next boundary placed
//                                    (released later, never earlier)
//   Release(N), slot holds M <= N -> RELEASE_ONE, slot free
//   Release(N), otherwise         -> nothing
//   ReleaseAll                    -> RELEASE_INDEFINITE, slot free
//   Discard                       -> (a fresh plug is swapped in), slot free
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "common/status.h"

namespace romulus::netbuf {

enum class PlugAction { kNone, kBuffer, kReleaseOne, kReleaseIndefinite };

class PlugEpochs {
 public:
  // Decide; Commit*() after the kernel accepted the command (a failed netlink
  // request leaves the bookkeeping unchanged).
  Result<PlugAction> OnCheckpoint(uint64_t epoch) const {
    if (have_checkpoint_ && epoch <= last_checkpoint_) {
      return Status::InvalidArgument("netbuf: checkpoint " + std::to_string(epoch) + " after " +
                                     std::to_string(last_checkpoint_));
    }
    return slot_ ? PlugAction::kNone : PlugAction::kBuffer;
  }
  void CommitCheckpoint(uint64_t epoch, PlugAction a) {
    last_checkpoint_ = epoch;
    have_checkpoint_ = true;
    if (a == PlugAction::kBuffer) {
      slot_ = epoch;
      released_all_ = false;  // BUFFER after RELEASE_INDEFINITE plugs again
      ++boundaries_;
    } else {
      ++coalesced_;
    }
  }

  Result<PlugAction> OnRelease(uint64_t epoch) const {
    if (!have_checkpoint_ || epoch > last_checkpoint_) {
      return Status::InvalidArgument("netbuf: release of epoch " + std::to_string(epoch) +
                                     " which was never checkpointed");
    }
    if (released_all_ || !slot_ || *slot_ > epoch) return PlugAction::kNone;
    return PlugAction::kReleaseOne;
  }
  void CommitRelease(PlugAction a) {
    if (a == PlugAction::kReleaseOne) {
      slot_.reset();
      ++releases_;
    }
  }

  void CommitReleaseAll() {
    slot_.reset();
    released_all_ = true;
  }
  void CommitDiscard() {
    slot_.reset();
    released_all_ = false;
  }

  bool released_all() const { return released_all_; }
  std::optional<uint64_t> slot() const { return slot_; }
  uint64_t boundaries() const { return boundaries_; }
  uint64_t releases() const { return releases_; }
  uint64_t coalesced() const { return coalesced_; }

 private:
  std::optional<uint64_t> slot_;  // epoch of the boundary held by the kernel
  uint64_t last_checkpoint_ = 0;
  bool have_checkpoint_ = false;
  bool released_all_ = false;
  uint64_t boundaries_ = 0, releases_ = 0, coalesced_ = 0;
};

}  // namespace romulus::netbuf
