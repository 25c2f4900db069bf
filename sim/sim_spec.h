// SimSpec: the simulated guest as named on the command line (--guest):
//
//   sim:size=1G,workload=seed[,seed=42][,rate=200|max][,disk=16M]
//
// "sim" alone means every default. Keys may come in any order, each at most
// once. Parsing is strict (unknown key, duplicate key, empty item, bad
// number, size not a multiple of 4 KiB or outside [1 MiB, 64 GiB], unknown
// workload: all errors, never a silent default), because the same string is
// also the guest's identity in the handshake and on the backup, where it is
// parsed again to resume the guest after failover.
//
// A workload runs in steps; Pause() lands between two steps. What one step
// is, and the default rate (steps per second), per workload:
//   seed        one pass over the first 16 MiB: buf[p*4096 + i*1024]++ for
//               i = 0..3 in every page p (4 bytes change per page per pass);
//               200 passes/s
//   sparse      64 random 8-byte writes, each at a random page of the whole
//               memory; 500 steps/s (32 000 writes/s)
//   hotset      64 random 8-byte writes, 15 of 16 inside a hot set of about
//               10% of the pages (16-page clusters, one in every 160 pages),
//               1 of 16 anywhere; 500 steps/s
//   sequential  fill one whole page with a counter pattern, the next page at
//               the next step, wrapping at the end; 4096 steps/s (16 MiB/s)
//   idle        nothing (a guest that never writes; rate is ignored)
// disk=SIZE gives the guest a simulated disk (sim/sim_disk.h): a multiple of
// 4 KiB in [64 KiB, 64 GiB]; 0 or absent: no disk. Its writer appends one
// numbered 4 KiB record every kSimDiskStepsPerRecord workload steps (so the
// record rate follows the workload's; idle writes none), between steps like
// the memory writes.
// rate=max runs unthrottled (benchmarks); the defaults keep a test machine's
// cores mostly free.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"

namespace romulus::sim {

enum class Workload : uint8_t {
  // Wire values (they are stored in the state blob): never renumber.
  kSeed = 1,
  kSparse = 2,
  kHotset = 3,
  kSequential = 4,
  kIdle = 5,
};

const char* WorkloadName(Workload w);
// Default rate of a workload in steps per second (see above).
constexpr uint64_t DefaultRate(Workload w) {
  switch (w) {
    case Workload::kSeed: return 200;
    case Workload::kSparse: return 500;
    case Workload::kHotset: return 500;
    case Workload::kSequential: return 4096;
    case Workload::kIdle: return 1;
  }
  return 1;
}

inline constexpr uint64_t kMinGuestBytes = uint64_t{1} << 20;   // 1 MiB
inline constexpr uint64_t kMaxGuestBytes = uint64_t{64} << 30;  // 64 GiB
inline constexpr uint64_t kMinSimDiskBytes = uint64_t{64} << 10;  // 64 KiB
inline constexpr uint64_t kMaxSimDiskBytes = uint64_t{64} << 30;  // 64 GiB
inline constexpr uint64_t kSimDiskStepsPerRecord = 4;
inline constexpr uint64_t kMaxRate = 100'000'000;               // steps per second

struct SimSpec {
  uint64_t size_bytes = uint64_t{1} << 30;
  Workload workload = Workload::kSeed;
  uint64_t seed = 1;
  // Steps per second; 0 = unthrottled (rate=max). Absent from the string =
  // DefaultRate(workload), filled in by ParseSimSpec.
  uint64_t rate = DefaultRate(Workload::kSeed);
  // The simulated disk's size in bytes; 0: no disk.
  uint64_t disk_bytes = 0;

  uint64_t pages() const { return size_bytes >> 12; }
  // Canonical form, parseable by ParseSimSpec and equal for equal specs:
  // "sim:size=1G,workload=seed,seed=1,rate=200" (",disk=16M" appended only
  // with a disk, so the identity of a guest without one is unchanged).
  std::string ToString() const;
  // The same spec with every field valid? (For specs built in code.)
  Status Validate() const;
};

// Parses "sim[:key=value,...]". Errors are InvalidArgument with a message
// that names the offending item.
Result<SimSpec> ParseSimSpec(std::string_view text);

// True if text names a simulated guest at all ("sim" or "sim:..."), so a
// caller can dispatch between guest kinds before parsing strictly.
bool IsSimSpec(std::string_view text);

}  // namespace romulus::sim
