// Channel flags shared by `replicate`, `restore` and `demo`: TLS with a
// pre-shared key (default), TLS with certificates, or --insecure.
#pragma once

#include <memory>
#include <string>

#include "cli/options.h"
#include "transport/security.h"
#include "transport/tcp.h"

namespace romulus::cli {

void AddSecurityOptions(po::options_description* desc);
// Builds and loads the security context from the flags; prints one error
// line and returns nullptr on bad flags or unusable key/cert files.
std::shared_ptr<transport::SecurityContext> LoadSecurity(const std::string& command,
                                                         const po::variables_map& vm);

// HOST:PORT of a peer to connect to (e.g. --to): it needs a host and a
// non-zero port (port 0 would make connect() fail late and vaguely, or pick
// nothing). Prints one "romulus CMD: --flag: ..." line and returns false otherwise.
bool ParsePeerAddress(const std::string& command, const std::string& flag, const std::string& text,
                      transport::HostPort* out);

}  // namespace romulus::cli
