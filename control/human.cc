#include "control/human.h"

#include <set>
#include <vector>

#include "common/units.h"

namespace romulus::control {

namespace {

// A member as text: strings without quotes, absent and null as "".
std::string Text(const Json& body, const char* key) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return "";
  if (it->is_string()) return it->get<std::string>();
  return Dump(*it);
}

int64_t Int(const Json& body, const char* key, int64_t fallback = 0) {
  auto it = body.find(key);
  if (it == body.end() || !it->is_number_integer()) return fallback;
  return it->get<int64_t>();
}

bool Bool(const Json& body, const char* key) {
  auto it = body.find(key);
  return it != body.end() && it->is_boolean() && it->get<bool>();
}

std::string Size(const Json& body, const char* key) {
  const int64_t v = Int(body, key, -1);
  return v < 0 ? "?" : FormatSize(static_cast<uint64_t>(v));
}

// Aligned "name: value" lines.
class Lines {
 public:
  void Add(const std::string& name, const std::string& value) { rows_.emplace_back(name, value); }
  std::string Done() const {
    size_t w = 0;
    for (const auto& [n, v] : rows_) w = std::max(w, n.size());
    std::string out;
    for (const auto& [n, v] : rows_) out += n + ":" + std::string(w - n.size() + 1, ' ') + v + "\n";
    return out;
  }

 private:
  std::vector<std::pair<std::string, std::string>> rows_;
};

// Whatever `shown` did not cover, so that no member is hidden.
void AddRest(const Json& body, const std::set<std::string>& shown, Lines* lines) {
  for (const auto& [k, v] : body.items()) {
    if (k == "ok" || shown.count(k) || v.is_null()) continue;
    lines->Add(k, v.is_string() ? v.get<std::string>() : Dump(v));
  }
}

std::string PrimaryStatus(const Json& b) {
  Lines l;
  std::string role = "primary";
  if (Text(b, "backend") == "xen") {
    const std::string type = Text(b, "guest_type");
    role += " (Xen " + (type.empty() ? std::string() : type == "pv" ? "PV " : type == "pvh" ? "PVH " : type + " ") +
            "domain " + Text(b, "domain") + ", domid " + Text(b, "domid") + ")";
  } else if (!Text(b, "backend").empty()) {
    role += " (" + Text(b, "backend") + ")";
  }
  l.Add("role", role);
  l.Add("guest", Text(b, "guest"));
  // The reason only with UNPROTECTED: right after `pause` the answer can
  // still say PROTECTED (the epoch in flight) while already giving the pause
  // as the reason; the "paused" line says that part.
  std::string prot = Text(b, "protection");
  if (prot != "PROTECTED" && !Text(b, "unprotected_reason").empty()) {
    prot += " (" + Text(b, "unprotected_reason") + ")";
  }
  l.Add("protection", prot);
  const int64_t acked = Int(b, "last_acked", -1);
  const int64_t age = Int(b, "last_ack_age_ms", -1);
  l.Add("last acked", acked < 0 ? "none yet"
                                : "epoch " + std::to_string(acked) + " (" + std::to_string(age) + " ms ago)");
  l.Add("epoch", Text(b, "epoch") + " (last started)");
  l.Add("interval", Text(b, "interval"));
  l.Add("output commit", Text(b, "output_commit"));
  std::string cache = Size(b, "cache_size");
  if (b.contains("cache_size_next_session") && Int(b, "cache_size_next_session") != Int(b, "cache_size")) {
    cache += " (next session: " + Size(b, "cache_size_next_session") + ")";
  }
  l.Add("cache", cache);
  if (Bool(b, "paused")) l.Add("paused", "yes: no checkpoints until `romulus ctl resume`");
  if (b.contains("disks") && b["disks"].is_object()) {
    const Json& d = b["disks"];
    const int64_t pm = Int(d, "copy_permille", 1000);
    std::string disks = pm >= 1000 ? "copied to the backup" : "being copied: " + std::to_string(pm / 10) + "%";
    disks += " (this session: " + std::to_string(Int(d, "copied_whole")) + " copied whole, " +
             std::to_string(Int(d, "resync_regions")) + " changed region(s) resynced)";
    l.Add("disks", disks);
  }
  AddRest(b,
          {"role", "guest", "epoch", "last_acked", "last_ack_age_ms", "protection", "paused", "output_commit",
           "interval_us", "interval", "cache_size", "cache_size_next_session", "unprotected_reason", "backend",
           "domain", "domid", "guest_type", "disks"},
          &l);
  return l.Done();
}

std::string BackupStatus(const Json& b) {
  Lines l;
  l.Add("role", "backup");
  l.Add("state", Text(b, "state"));
  std::string decision = Text(b, "decision");
  if (!Text(b, "decision_reason").empty()) decision += " (" + Text(b, "decision_reason") + ")";
  l.Add("decision", decision);
  l.Add("protection", Text(b, "protection"));
  l.Add("committed epoch", Text(b, "committed_epoch") + " (digest " + Text(b, "digest") + ")");
  l.Add("primary", Text(b, "primary").empty() ? "none connected" : Text(b, "primary"));
  l.Add("sessions", Text(b, "sessions") + " (" + Text(b, "strays") + " stray connections dropped)");
  if (Bool(b, "failover")) l.Add("failover", "yes: " + Text(b, "failover_reason"));
  if (!Text(b, "reverse_to").empty()) l.Add("reverse to", Text(b, "reverse_to"));
  AddRest(b,
          {"role", "state", "epoch", "committed_epoch", "digest", "protection", "primary", "failover", "decision",
           "decision_reason", "sessions", "strays", "failover_reason", "reverse_to", "output_commit"},
          &l);
  return l.Done();
}

// `stats`: the last epoch and the totals, one "name: k=v ..." line each.
std::string Stats(const Json& b) {
  auto flat = [](const Json& o) {
    if (!o.is_object()) return std::string("none yet");
    std::string s;
    for (const auto& [k, v] : o.items()) {
      if (k == "totals") continue;
      s += (s.empty() ? "" : " ") + k + "=" + (v.is_string() ? v.get<std::string>() : Dump(v));
    }
    return s;
  };
  Lines l;
  l.Add("last epoch", b.contains("last") ? flat(b["last"]) : "none yet");
  l.Add("totals", b.contains("totals") ? flat(b["totals"]) : "none yet");
  return l.Done();
}

std::string Digest(const Json& b) {
  std::string out = "ok: epoch " + Text(b, "epoch") + " digest " + Text(b, "digest") + " over " +
                    Text(b, "guest_pages") + " pages\n";
  if (auto r = b.find("regions"); r != b.end() && r->is_array()) {
    size_t i = 0;
    for (const auto& v : *r) out += "  region " + std::to_string(i++) + ": " + (v.is_string() ? v.get<std::string>() : Dump(v)) + "\n";
  }
  return out;
}

struct Human {
  const Json& b;
  std::string operator()(const StatusReq&) const {
    return Text(b, "role") == "backup" ? BackupStatus(b) : PrimaryStatus(b);
  }
  std::string operator()(const StatsReq&) const { return Stats(b); }
  std::string operator()(const SetIntervalReq&) const {
    return "ok: interval " + FormatDuration(std::chrono::microseconds(Int(b, "interval_us"))) + " from the " +
           Text(b, "applies") + "\n";
  }
  std::string operator()(const SetCacheSizeReq&) const {
    std::string out = "ok: cache " + Size(b, "cache_size_next_session") + " from the " + Text(b, "applies");
    if (!Text(b, "note").empty()) out += " (" + Text(b, "note") + ")";
    return out + "\n";
  }
  std::string operator()(const PauseReq&) const { return "ok: paused: " + Text(b, "warning") + "\n"; }
  std::string operator()(const ResumeReq&) const { return "ok: resumed: checkpointing again\n"; }
  std::string operator()(const FailoverReq&) const {
    return "ok: activated from epoch " + Text(b, "epoch") + "\n";
  }
  std::string operator()(const DigestReq&) const { return Digest(b); }
  std::string operator()(const SwitchoverReq&) const {
    return "ok: handed over at final epoch " + Text(b, "final_epoch") + "; " + Text(b, "guest") + "\n";
  }
  std::string operator()(const SetReverseToReq&) const {
    const std::string t = Text(b, "reverse_to");
    return t.empty() ? "ok: no reverse replication after activation\n"
                     : "ok: after activation, replicate the guest back to " + t + "\n";
  }
  std::string operator()(const WaitReq&) const {
    auto e = b.find("event");
    if (e == b.end() || !e->is_object()) return Dump(b) + "\n";
    return Text(*e, "event") + " (seq " + Text(*e, "seq") + "): " + Dump(*e) + "\n";
  }
  std::string operator()(const HelpReq&) const {
    std::string list;
    if (auto c = b.find("commands"); c != b.end() && c->is_array()) {
      for (const auto& v : *c) list += (list.empty() ? "" : ", ") + (v.is_string() ? v.get<std::string>() : Dump(v));
    }
    return Text(b, "role") + " commands: " + list + "\n";
  }
};

}  // namespace

std::string RenderHuman(const Request& request, const Json& body) {
  if (!body.is_object()) return Dump(body) + "\n";
  return std::visit(Human{body}, request);
}

}  // namespace romulus::control
