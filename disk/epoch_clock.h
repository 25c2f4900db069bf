// Epoch tags for disk requests (docs/DISK.md §3): a request is tagged with
// the epoch in which its header was read from the client, and the engine
// seals epoch N's disk data only once no request tagged <= N is still being
// executed. That pair of rules is what makes the disk cut consistent with
// the memory checkpoint (§4).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <utility>
#include <vector>

#include "common/status.h"
#include "common/thread_annotations.h"

namespace romulus::disk {

// What a front end (the NBD server; ublk later) sees of the epoch clock.
class EpochClock {
 public:
  virtual ~EpochClock() = default;
  // The request whose header was just read: returns its tag (the epoch in
  // progress) and counts it in flight until Release(tag).
  virtual uint64_t Acquire() = 0;
  // The request tagged `tag` is done: reported to the sink, or abandoned
  // with nothing reported. Exactly once per Acquire.
  virtual void Release(uint64_t tag) = 0;
};

// The primary's clock: the controller advances it at each suspend.
class EpochCounter final : public EpochClock {
 public:
  explicit EpochCounter(uint64_t first_epoch = 1);

  uint64_t Acquire() override;
  void Release(uint64_t tag) override;

  // At the suspend that ends the current epoch N, with the guest paused:
  // returns N; requests read from now on are tagged N+1.
  uint64_t Advance();
  uint64_t current() const;
  // No request tagged <= epoch is in flight: epoch's disk data is complete.
  bool Drained(uint64_t epoch) const;
  // Waits for Drained(epoch); Timeout if the deadline passes first.
  Status WaitDrained(uint64_t epoch, std::chrono::steady_clock::time_point deadline) const;
  // Requests in flight, all tags (tests, status).
  uint64_t in_flight() const;

 private:
  mutable std::mutex mu_;
  mutable std::condition_variable drained_cv_;
  uint64_t current_ GUARDED_BY(mu_);
  // (tag, requests in flight with that tag). Entries exist only while a
  // request is in flight, so the list is as long as the number of distinct
  // tags in flight: one or two per front end. Reserved up front so the
  // steady state does not allocate.
  std::vector<std::pair<uint64_t, uint32_t>> in_flight_ GUARDED_BY(mu_);
};

}  // namespace romulus::disk
