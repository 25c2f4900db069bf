// RandomNonZeroId: a random 64-bit identifier, never 0 (0 means "none" in
// the wire formats that carry one: session ids, disk lineages).
#pragma once

#include <sys/random.h>

#include <cstdint>

#include "common/clock.h"

namespace romulus {

inline uint64_t RandomNonZeroId() {
  uint64_t id = 0;
  while (id == 0) {
    // getrandom only fails before the kernel's pool is ready (or on EINTR):
    // the clock is unique enough for an identifier, not a secret.
    if (getrandom(&id, sizeof id, 0) != sizeof id) id = MonotonicNs();
  }
  return id;
}

}  // namespace romulus
