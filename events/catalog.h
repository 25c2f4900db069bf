// The events both roles emit, one function each: the one home of their
// names and fields (docs/EVENTS.md is the contract). All take a nullable log.
#pragma once

#include <cstdint>
#include <string>

#include "common/digest.h"
#include "events/event_log.h"

namespace romulus::events {

// ---- backup ----
// incomplete: empty for a resumable checkpoint; otherwise why it is not (a
// disk still being copied), as `not_resumable`.
inline void Commit(EventLog* log, uint64_t epoch, uint64_t digest, const std::string& incomplete = "") {
  if (!log) return;
  if (incomplete.empty()) {
    log->Emit("commit", {{"epoch", epoch}, {"digest", DigestHex(digest)}});
  } else {
    log->Emit("commit", {{"epoch", epoch}, {"digest", DigestHex(digest)}, {"not_resumable", incomplete}});
  }
}
inline void Failover(EventLog* log, const std::string& reason, uint64_t epoch, uint64_t digest, bool activated) {
  if (log) {
    log->Emit("failover", {{"reason", reason},
                           {"last_committed_epoch", epoch},
                           {"digest", DigestHex(digest)},
                           {"activated", activated}});
  }
}
inline void BackupStop(EventLog* log, uint64_t epoch, uint64_t digest) {
  if (log) log->Emit("stop", {{"last_committed_epoch", epoch}, {"digest", DigestHex(digest)}});
}
inline void SessionStart(EventLog* log, const std::string& peer) {
  if (log) log->Emit("session_start", {{"peer", peer}});
}
inline void SessionEnd(EventLog* log, const std::string& cause, const std::string& detail, uint64_t committed) {
  if (log) log->Emit("session_end", {{"cause", cause}, {"detail", detail}, {"epochs_committed", committed}});
}
inline void Decision(EventLog* log, const std::string& decision, const std::string& why) {
  if (log) log->Emit("decision", {{"decision", decision}, {"why", why}});
}
inline void Fence(EventLog* log, bool confirmed, const std::string& detail, uint64_t epoch) {
  if (log) log->Emit("fence", {{"confirmed", confirmed}, {"detail", detail}, {"epoch", epoch}});
}

// ---- primary ----
inline void Connected(EventLog* log, uint64_t first_epoch, bool held, uint64_t held_pages) {
  if (log) {
    Json f = {{"first_epoch", first_epoch}, {"held_table", held}};
    if (held) f["held_pages"] = held_pages;
    log->Emit("session_start", f);
  }
}
inline void Protected(EventLog* log, uint64_t epoch) {
  if (log) log->Emit("protected", {{"epoch", epoch}});
}
inline void Unprotected(EventLog* log, const std::string& reason) {
  if (log) log->Emit("unprotected", {{"reason", reason}});
}
inline void Paused(EventLog* log, bool paused) {
  if (log) log->Emit(paused ? "paused" : "resumed");
}
inline void Switchover(EventLog* log, uint64_t epoch, bool ok, const std::string& detail) {
  if (log) log->Emit("switchover", {{"epoch", epoch}, {"ok", ok}, {"detail", detail}});
}
inline void PrimaryStop(EventLog* log, int64_t last_acked, const std::string& why) {
  if (log) log->Emit("stop", {{"last_acked", last_acked}, {"why", why}});
}

}  // namespace romulus::events
