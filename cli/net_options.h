// Channel flags shared by `replicate`, `restore` and `demo`: TLS with a
// pre-shared key (default), TLS with certificates, or --insecure.
#pragma once

#include <memory>
#include <string>

#include "cli/options.h"
#include "transport/security.h"

namespace romulus::cli {

void AddSecurityOptions(po::options_description* desc);
// Builds and loads the security context from the flags; prints one error
// line and returns nullptr on bad flags or unusable key/cert files.
std::shared_ptr<transport::SecurityContext> LoadSecurity(const std::string& command,
                                                         const po::variables_map& vm);

}  // namespace romulus::cli
