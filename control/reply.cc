#include "control/reply.h"

#include <array>

namespace romulus::control {

std::string Dump(const Json& j) { return j.dump(-1, ' ', false, Json::error_handler_t::replace); }

std::string Quote(std::string_view s) { return Dump(Json(std::string(s))); }

std::string Render(const Reply& r) {
  Json out = Json::object();
  out["ok"] = r.ok;
  if (r.ok) {
    if (r.members.is_object()) {
      for (const auto& [k, v] : r.members.items()) out[k] = v;
    }
  } else {
    out["error"] = r.error;
    out["usage"] = r.usage;
  }
  return Dump(out);
}

Result<ParsedReply> ParseReply(std::string_view line) {
  // No exceptions out of here: a garbled answer is an error value.
  Json j = Json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return Status::Corruption("the answer is not a JSON object");
  auto ok = j.find("ok");
  if (ok == j.end() || !ok->is_boolean()) return Status::Corruption("the answer has no boolean \"ok\"");
  ParsedReply p;
  p.ok = ok->get<bool>();
  if (auto u = j.find("usage"); u != j.end() && u->is_boolean()) p.usage = u->get<bool>();
  if (auto e = j.find("error"); e != j.end() && e->is_string()) p.error = e->get<std::string>();
  p.body = std::move(j);
  return p;
}

const char* RoleName(Role role) {
  switch (role) {
    case Role::kPrimary: return "primary";
    case Role::kBackup: return "backup";
    case Role::kXenBackup: return "Xen backup";
  }
  return "?";
}

namespace {

bool IsPrimary(Role role) { return role == Role::kPrimary; }

// The command set, in the order `help` lists it; one table for every role.
struct Entry {
  const char* usage;  // as `help` shows it
  Request sample;     // its type
  bool primary, backup, xen_backup;
};
const std::array<Entry, 12>& Table() {
  static const std::array<Entry, 12> table = {{
      {"status", StatusReq{}, true, true, true},
      {"stats", StatsReq{}, true, false, false},
      {"set interval D", SetIntervalReq{}, true, false, false},
      {"set cache-size S", SetCacheSizeReq{}, true, false, false},
      {"pause", PauseReq{}, true, false, false},
      {"resume", ResumeReq{}, true, false, false},
      {"failover", FailoverReq{}, false, true, true},
      {"digest EPOCH [REGIONS]", DigestReq{}, true, true, true},
      {"switchover", SwitchoverReq{}, true, false, false},
      {"set reverse-to HOST:PORT|none", SetReverseToReq{}, false, true, true},
      {"help", HelpReq{}, true, true, true},
      {"wait EVENT [after SEQ] [within D]", WaitReq{}, true, true, true},
  }};
  return table;
}

bool Has(const Entry& e, Role role) {
  switch (role) {
    case Role::kPrimary: return e.primary;
    case Role::kBackup: return e.backup;
    case Role::kXenBackup: return e.xen_backup;
  }
  return false;
}

}  // namespace

bool Supports(Role role, const Request& r) {
  for (const Entry& e : Table()) {
    if (e.sample.index() == r.index()) return Has(e, role);
  }
  return false;
}

Reply Refusal(Role role, const Request& r) {
  // Why, and where the command does exist: the operator's next step.
  std::string where;
  if (std::holds_alternative<FailoverReq>(r)) {
    where = "failover is the backup's command (romulus ctl --socket BACKUP.sock failover); for a planned move "
            "with no lost epoch use `romulus switchover`";
  } else if (std::holds_alternative<SetReverseToReq>(r)) {
    where = "it is the backup's command (romulus ctl --socket BACKUP.sock set reverse-to HOST:PORT)";
  } else if (!IsPrimary(role)) {
    where = "it is a primary command (romulus ctl --socket PRIMARY.sock ...)";
  } else {
    where = "see `help`";
  }
  return Reply::Fail("'" + std::string(CommandName(r)) + "' is not a command of this " + RoleName(role) + ": " +
                     where);
}

Reply HelpReply(Role role) {
  Json list = Json::array();
  for (const Entry& e : Table()) {
    if (Has(e, role)) list.push_back(e.usage);
  }
  return Reply::Ok(Json{{"role", RoleName(role)}, {"commands", std::move(list)}});
}

}  // namespace romulus::control
