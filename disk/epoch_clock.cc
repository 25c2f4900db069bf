#include "disk/epoch_clock.h"

namespace romulus::disk {

EpochCounter::EpochCounter(uint64_t first_epoch) : current_(first_epoch) {
  in_flight_.reserve(16);
}

uint64_t EpochCounter::Acquire() {
  std::lock_guard<std::mutex> lock(mu_);
  // The tag and the in-flight count change under the same lock as Advance,
  // so a request is either read before the boundary (tag N, and Drained(N)
  // waits for it) or after it (tag N+1): there is no third case.
  uint64_t tag = current_;
  for (auto& [epoch, count] : in_flight_) {
    if (epoch == tag) {
      ++count;
      return tag;
    }
  }
  in_flight_.emplace_back(tag, 1);
  return tag;
}

void EpochCounter::Release(uint64_t tag) {
  std::lock_guard<std::mutex> lock(mu_);
  for (size_t i = 0; i < in_flight_.size(); ++i) {
    if (in_flight_[i].first != tag) continue;
    if (--in_flight_[i].second == 0) {
      in_flight_[i] = in_flight_.back();
      in_flight_.pop_back();
      drained_cv_.notify_all();
    }
    return;
  }
  // A Release without its Acquire is a bug of the front end; ignoring it
  // keeps the counts of the others right.
}

uint64_t EpochCounter::Advance() {
  std::lock_guard<std::mutex> lock(mu_);
  return current_++;
}

uint64_t EpochCounter::current() const {
  std::lock_guard<std::mutex> lock(mu_);
  return current_;
}

bool EpochCounter::Drained(uint64_t epoch) const {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [tag, count] : in_flight_) {
    if (tag <= epoch) return false;
  }
  return true;
}

Status EpochCounter::WaitDrained(uint64_t epoch,
                                 std::chrono::steady_clock::time_point deadline) const {
  std::unique_lock<std::mutex> lock(mu_);
  auto drained = [&] {
    for (const auto& [tag, count] : in_flight_) {
      if (tag <= epoch) return false;
    }
    return true;
  };
  if (!drained_cv_.wait_until(lock, deadline, drained)) {
    return Status::Timeout("disk requests of epoch " + std::to_string(epoch) +
                           " still in flight at the deadline");
  }
  return Status::Ok();
}

uint64_t EpochCounter::in_flight() const {
  std::lock_guard<std::mutex> lock(mu_);
  uint64_t n = 0;
  for (const auto& [tag, count] : in_flight_) n += count;
  return n;
}

}  // namespace romulus::disk
