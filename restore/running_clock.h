// RunningClock: time that passes only while this process runs.
//
// The backup must not mistake its own stall (SIGSTOP, CPU starvation, swap)
// for the primary's silence (docs/FAILURE-MODEL.md §3). Its loops call
// Advance(now) at least every kTick; the clock moves by the real time since
// the previous call, but by at most kMaxStep: a longer gap means this
// process was not scheduled, and only kMaxStep of it counts. Pure (the
// caller passes the monotonic time), so tests drive it with made-up times.
//
// Not thread-safe: one owner thread.
#pragma once

#include <chrono>

namespace romulus::restore {

class RunningClock {
 public:
  using Duration = std::chrono::nanoseconds;
  using TimePoint = std::chrono::steady_clock::time_point;
  static constexpr Duration kTick = std::chrono::milliseconds(100);
  static constexpr Duration kMaxStep = std::chrono::milliseconds(250);

  explicit RunningClock(TimePoint start) : last_(start) {}

  // Moves the clock to `now` (monotonic). Returns the running time.
  Duration Advance(TimePoint now) {
    if (now > last_) {
      Duration step = now - last_;
      if (step > kMaxStep) {
        stalled_ += step - kMaxStep;
        ++stalls_;
        step = kMaxStep;
      }
      running_ += step;
      last_ = now;
    }
    return running_;
  }
  Duration now() const { return running_; }
  // Real time not counted (gaps beyond kMaxStep), and how many such gaps.
  Duration stalled() const { return stalled_; }
  unsigned long stalls() const { return stalls_; }

 private:
  TimePoint last_;
  Duration running_{0};
  Duration stalled_{0};
  unsigned long stalls_ = 0;
};

}  // namespace romulus::restore
