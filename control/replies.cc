#include "control/replies.h"

#include "common/digest.h"
#include "common/units.h"

namespace romulus::control {

Json ToJson(const PrimaryStatus& s) {
  Json j = Json::object();
  j["role"] = "primary";
  j["guest"] = s.guest;
  j["epoch"] = s.epoch;
  j["last_acked"] = s.last_acked;
  j["last_ack_age_ms"] = static_cast<int64_t>(s.last_ack_age.count());
  j["protection"] = s.protected_now ? "PROTECTED" : "UNPROTECTED";
  j["paused"] = s.paused;
  j["output_commit"] = s.output_commit;
  j["interval_us"] = static_cast<int64_t>(s.interval.count());
  j["interval"] = FormatDuration(s.interval);
  j["cache_size"] = s.cache_size;
  j["cache_size_next_session"] = s.cache_size_next_session;
  // Present in every answer (same key set for every primary); a reason only
  // while the guest is not protected.
  if (!s.protected_now || s.paused) {
    j["unprotected_reason"] = s.unprotected_reason.empty() ? std::string("unknown") : s.unprotected_reason;
  } else {
    j["unprotected_reason"] = nullptr;
  }
  j["backend"] = s.backend;
  j["domain"] = s.domain ? Json(*s.domain) : Json(nullptr);
  j["domid"] = s.domid ? Json(*s.domid) : Json(nullptr);
  j["guest_type"] = s.guest_type ? Json(*s.guest_type) : Json(nullptr);
  if (s.disks) {
    Json d = Json::object();
    d["copy_permille"] = s.disks->copy_permille;
    d["resync_regions"] = s.disks->resync_regions;
    d["copied_whole"] = s.disks->copied_whole;
    j["disks"] = d;
  } else {
    j["disks"] = nullptr;
  }
  return j;
}

Json IntervalSetJson(std::chrono::microseconds interval) {
  Json j = Json::object();
  j["interval_us"] = static_cast<int64_t>(interval.count());
  j["applies"] = "next epoch";
  return j;
}

Json CacheSizeLiveJson(uint64_t bytes) {
  Json j = Json::object();
  j["cache_size"] = bytes;
  j["cache_size_next_session"] = bytes;
  j["applies"] = "next epoch";
  return j;
}

Json CacheSizeNextSessionJson(uint64_t bytes) {
  Json j = Json::object();
  j["cache_size_next_session"] = bytes;
  j["applies"] = "next session (after the next resynchronisation)";
  j["note"] = "no backup connected, or it cannot resize its cache live";
  return j;
}

Json PausedJson(bool paused) {
  Json j = Json::object();
  j["paused"] = paused;
  if (paused) j["warning"] = "the guest runs UNPROTECTED until resume";
  return j;
}

Result<Json> StatsJson(std::string_view stats_text) {
  Json in = Json::parse(stats_text, nullptr, /*allow_exceptions=*/false);
  if (in.is_discarded() || !in.is_object()) return Status::Corruption("stats are not a JSON object");
  Json j = Json::object();
  j["last"] = in.contains("last") ? in["last"] : Json(nullptr);
  j["totals"] = in.contains("totals") ? in["totals"] : Json(nullptr);
  return j;
}

Json SwitchoverJson(uint64_t final_epoch, std::string guest_note) {
  Json j = Json::object();
  j["final_epoch"] = final_epoch;
  j["guest"] = std::move(guest_note);
  return j;
}

Json ToJson(const DigestAnswer& d) {
  Json j = Json::object();
  j["epoch"] = d.epoch;
  j["digest"] = DigestHex(d.digest);
  j["guest_pages"] = d.guest_pages;
  Json regions = Json::array();
  for (uint64_t r : d.regions) regions.push_back(DigestHex(r));
  j["regions"] = std::move(regions);
  return j;
}

Json ToJson(const BackupStatus& s) {
  Json j = Json::object();
  j["role"] = "backup";
  j["state"] = s.state;
  j["epoch"] = s.committed_epoch;
  j["committed_epoch"] = s.committed_epoch;
  j["digest"] = DigestHex(s.digest);
  j["protection"] = s.protecting ? "PROTECTED" : "UNPROTECTED";
  j["primary"] = s.primary;
  j["failover"] = s.failed_over;
  j["decision"] = s.decision;
  j["decision_reason"] = s.decision_reason;
  j["sessions"] = s.sessions;
  j["strays"] = s.strays;
  // Absent rather than null when unset: tools read "reverse_to" back as the
  // value to restore (cmd_switchover.cc), and a literal null is no target.
  if (!s.failover_reason.empty()) j["failover_reason"] = s.failover_reason;
  if (!s.reverse_to.empty()) j["reverse_to"] = s.reverse_to;
  j["output_commit"] = "primary side";
  return j;
}

Json FailoverJson(uint64_t epoch) {
  Json j = Json::object();
  j["activated"] = true;
  j["epoch"] = epoch;
  return j;
}

Json ReverseToJson(const std::string& target) {
  Json j = Json::object();
  j["reverse_to"] = target;
  return j;
}

}  // namespace romulus::control
