// The control socket's answers: one envelope (Reply), one writer (Render)
// and one reader (ParseReply), all on nlohmann::ordered_json so that members
// keep the order they were added in — the order docs/CONTROL.md shows.
//
//   {"ok":true, ...members...}
//   {"ok":false,"error":"one line","usage":B}   usage=true: the request was wrong
//
// And the one rule for a command a role does not have (Refusal): ok:false,
// usage:false, one wording for every role and command.
#pragma once

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "common/status.h"
#include "control/request.h"

namespace romulus::control {

using Json = nlohmann::ordered_json;

struct Reply {
  bool ok = true;
  bool usage = false;                // with !ok: the request itself was wrong
  Json members = Json::object();    // with ok: the command's answer
  std::string error;                 // with !ok

  static Reply Ok(Json members = Json::object()) { return {true, false, std::move(members), ""}; }
  static Reply Fail(std::string error) { return {false, false, Json::object(), std::move(error)}; }
  static Reply Usage(std::string error) { return {false, true, Json::object(), std::move(error)}; }
};

// One JSON line, without the trailing '\n'. Never throws: bytes that are not
// UTF-8 (a guest name, an errno text) are replaced, not fatal.
std::string Render(const Reply& r);
// A JSON string literal ("\"...\"", escaped), for the few callers that still
// write JSON text around it.
std::string Quote(std::string_view s);
// `j` as one line, with the same non-UTF-8 rule as Render.
std::string Dump(const Json& j);

// Reads a reply line as Render wrote it (romulus ctl, switchover, drills).
// Corruption for anything but a JSON object with a boolean "ok".
struct ParsedReply {
  bool ok = false;
  bool usage = false;
  std::string error;
  Json body;  // the whole object, "ok" included
};
Result<ParsedReply> ParseReply(std::string_view line);

// Who answers on a control socket; decides the command set.
enum class Role {
  kPrimary,     // replicate, any guest type (and a reverse primary)
  kBackup,      // restore with an image (simulated guest)
  kXenBackup,   // restore --xen
};
const char* RoleName(Role role);  // "primary", "backup", "Xen backup"

// Whether `role` has the command `r`.
bool Supports(Role role, const Request& r);
// The answer to a command `role` does not have (ok:false, usage:false).
Reply Refusal(Role role, const Request& r);
// {"commands":[...]}: the command set of `role`, for `help`.
Reply HelpReply(Role role);

}  // namespace romulus::control
