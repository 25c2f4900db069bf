// CLOCK_MONOTONIC in nanoseconds: heartbeats carry it (PROTOCOL.md §3.5).
#pragma once

#include <time.h>

#include <cstdint>

namespace romulus {

inline uint64_t MonotonicNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

}  // namespace romulus
