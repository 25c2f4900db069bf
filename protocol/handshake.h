// Handshake policy (docs/PROTOCOL.md §4): the backup's decision on a HELLO
// and the primary's check of the HELLO_ACK. Pure functions, no I/O, so they
// are unit-tested and fuzzed directly.
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"
#include "protocol/messages.h"

namespace romulus::protocol {

// What a backup is willing to serve.
struct BackupPolicy {
  uint16_t version_min = kProtocolVersion;
  uint16_t version_max = kProtocolVersion;
  uint64_t supported_capabilities = kCapAllKnown;
  uint64_t max_cache_pages = 0;   // 0 = no limit; also bounds CACHE_RESIZE (sent in HELLO_ACK)
  uint64_t max_guest_pages = 0;   // 0 = no limit
  std::string expected_identity;  // empty = accept any guest
  std::string busy_with;          // identity of a live session, empty if idle
  uint64_t committed_epoch = 0;   // reported back in HELLO_ACK
  // The Xen release (XenRelease) this backup restores with; 0 = not a Xen
  // backup. A HELLO naming a newer release is refused (kCapXenRelease).
  uint32_t xen_release = 0;
};

// Decides on a decoded HELLO: returns the HELLO_ACK to send, accepted or
// refused with the reason. Never fails: every outcome is an answer.
HelloAck Negotiate(const Hello& hello, const BackupPolicy& policy);

// Checks semantic validity of a HELLO on its own (page size, heartbeat
// ranges, first_epoch >= 1, version range ordered). Negotiate() calls it;
// exposed for tests and fuzzing. InvalidArgument with the reason.
Status ValidateHello(const Hello& hello);

// Primary side: checks the answer to `sent`. A refusal is Unsupported
// ("backup refused the session: busy: ...", ack.error has the code); an
// acceptance that breaks the rules (session id not echoed, version outside
// the offered range, capabilities not within offered or missing a required
// bit) is Corruption.
Status CheckHelloAck(const Hello& sent, const HelloAck& ack);

}  // namespace romulus::protocol
