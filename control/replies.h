// The typed answers of the control commands (docs/CONTROL.md), one struct per
// answer and one ToJson each, so that every role that has a command answers
// it with the same keys, in the same order, with the same types.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "control/reply.h"

namespace romulus::control {

// `status` of a primary, simulated guest or Xen domain alike. Keys, in order:
// role, guest, epoch, last_acked, last_ack_age_ms, protection, paused,
// output_commit, interval_us, interval, cache_size, cache_size_next_session,
// unprotected_reason (null while PROTECTED and not paused), backend ("sim" or
// "xen"), domain, domid and guest_type (null for a simulated guest); then `extra`'s
// members (a reverse primary's replicating_to, activated_from_epoch).
struct PrimaryStatus {
  std::string guest;
  uint64_t epoch = 0;                          // last started
  int64_t last_acked = -1;                     // -1 before the first ack
  std::chrono::milliseconds last_ack_age{-1};  // -1 before the first ack
  bool protected_now = false;
  bool paused = false;
  std::string output_commit;
  std::chrono::microseconds interval{0};
  uint64_t cache_size = 0;               // in use
  uint64_t cache_size_next_session = 0;  // what a new session would start with
  std::string unprotected_reason;        // why not PROTECTED ("unknown" if empty)
  std::string backend = "sim";
  std::optional<std::string> domain;
  std::optional<uint32_t> domid;
  std::optional<std::string> guest_type;  // "pv", "pvh"
  // The session's copy of the guest's disks (docs/DISK.md §7); absent
  // without disks.
  struct Disks {
    uint32_t copy_permille = 1000;  // the least progress of any disk's copy; 1000 = whole
    uint64_t resync_regions = 0;    // regions copied because they changed since the backup's copy (§7.2)
    uint64_t copied_whole = 0;      // disks this session copied whole
  };
  std::optional<Disks> disks;
};
Json ToJson(const PrimaryStatus& s);

// `set interval`: {interval_us, applies}.
Json IntervalSetJson(std::chrono::microseconds interval);
// `set cache-size`, applied live at the next epoch:
// {cache_size, cache_size_next_session, applies}.
Json CacheSizeLiveJson(uint64_t bytes);
// `set cache-size` kept for the next session (no backup, or an old one):
// {cache_size_next_session, applies, note}.
Json CacheSizeNextSessionJson(uint64_t bytes);
// `pause` / `resume`: {paused[, warning]}.
Json PausedJson(bool paused);
// `stats`: {last, totals} from the {"last":...,"totals":...} text the
// engine renders (null members stay null); Corruption if it is not JSON.
Result<Json> StatsJson(std::string_view stats_text);
// `switchover`: {final_epoch, guest}.
Json SwitchoverJson(uint64_t final_epoch, std::string guest_note);

// `digest`: {epoch, digest, guest_pages, regions} (hex sums).
struct DigestAnswer {
  uint64_t epoch = 0;
  uint64_t digest = 0;
  uint64_t guest_pages = 0;
  std::vector<uint64_t> regions;
};
Json ToJson(const DigestAnswer& d);

// `status` of a backup. Keys, in order: role, state, epoch, committed_epoch,
// digest, protection, primary, failover, decision, decision_reason, sessions,
// strays, failover_reason (only after an activation), reverse_to (only when
// set), output_commit ("primary side").
struct BackupStatus {
  std::string state;
  uint64_t committed_epoch = 0;
  uint64_t digest = 0;
  bool protecting = false;
  std::string primary;
  bool failed_over = false;
  std::string decision;
  std::string decision_reason;
  uint64_t sessions = 0;
  uint64_t strays = 0;
  std::string failover_reason;
  std::string reverse_to;
};
Json ToJson(const BackupStatus& s);
// `failover` on a backup: {activated, epoch}.
Json FailoverJson(uint64_t epoch);
// `set reverse-to`: {reverse_to} ("" for none).
Json ReverseToJson(const std::string& target);

}  // namespace romulus::control
