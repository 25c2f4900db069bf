// `romulus ctl`'s rendering of a successful answer for people, in the manner
// of `xl list` / `xl info`: aligned "name: value" lines for `status`, one
// "ok: ..." line for the commands that change something. Tools use
// `romulus ctl --json`, which prints the answer line unchanged.
#pragma once

#include <string>

#include "control/reply.h"
#include "control/request.h"

namespace romulus::control {

// The text (newline-terminated) for the answer `body` (the whole reply
// object, "ok" included) to `request`. Members it does not know are shown as
// "name: value" so that nothing an answer carries is hidden.
std::string RenderHuman(const Request& request, const Json& body);

}  // namespace romulus::control
