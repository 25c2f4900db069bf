#include "protocol/handshake.h"

#include <algorithm>
#include <cinttypes>
#include <cstdio>

namespace romulus::protocol {
namespace {

std::string Hex(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%" PRIx64, v);
  return buf;
}

HelloAck Refuse(const Hello& hello, const BackupPolicy& policy, ErrorCode code,
                std::string text, uint16_t version) {
  HelloAck a;
  a.accepted = false;
  a.version = version;
  a.error = code;
  a.capabilities = policy.supported_capabilities;
  a.session_id = hello.session_id;
  a.backup_epoch = policy.committed_epoch;
  if (text.size() > kMaxShortText) text.resize(kMaxShortText);
  a.text = std::move(text);
  return a;
}

}  // namespace

Status ValidateHello(const Hello& h) {
  if (h.version_min == 0 || h.version_min > h.version_max) {
    return Status::InvalidArgument("version range " + std::to_string(h.version_min) + ".." +
                                   std::to_string(h.version_max) + " is empty");
  }
  if (h.page_size != kPageSize) {
    return Status::InvalidArgument("page size " + std::to_string(h.page_size) +
                                   " (only 4096 is supported)");
  }
  if (h.guest_pages == 0) return Status::InvalidArgument("guest size is 0 pages");
  if (h.first_epoch == 0) return Status::InvalidArgument("first epoch must be >= 1");
  if (h.heartbeat_ms < 10 || h.heartbeat_ms > 10000) {
    return Status::InvalidArgument("heartbeat period " + std::to_string(h.heartbeat_ms) +
                                   " ms outside 10..10000");
  }
  if (h.peer_timeout_ms > 600000 ||
      uint64_t{h.peer_timeout_ms} < 2 * uint64_t{h.heartbeat_ms}) {
    return Status::InvalidArgument("peer timeout " + std::to_string(h.peer_timeout_ms) +
                                   " ms must be 2x the heartbeat period and at most 600000");
  }
  if ((h.required & ~h.capabilities) != 0) {
    return Status::InvalidArgument("required capabilities are not offered");
  }
  return Status::Ok();
}

HelloAck Negotiate(const Hello& hello, const BackupPolicy& policy) {
  // Version first: if we cannot even agree on a version, nothing else in the
  // message can be interpreted with confidence.
  uint16_t lo = std::max(hello.version_min, policy.version_min);
  uint16_t hi = std::min(hello.version_max, policy.version_max);
  if (hello.version_min > hello.version_max || lo > hi) {
    return Refuse(hello, policy, ErrorCode::kVersion,
                  "no common protocol version: primary speaks " +
                      std::to_string(hello.version_min) + ".." +
                      std::to_string(hello.version_max) + ", backup " +
                      std::to_string(policy.version_min) + ".." +
                      std::to_string(policy.version_max),
                  policy.version_max);
  }
  if (Status st = ValidateHello(hello); !st.ok()) {
    ErrorCode code = hello.page_size != kPageSize || hello.guest_pages == 0
                         ? ErrorCode::kGeometry
                         : ErrorCode::kProtocol;
    return Refuse(hello, policy, code, st.message(), policy.version_max);
  }
  uint64_t missing = hello.required & ~policy.supported_capabilities;
  if (missing != 0) {
    return Refuse(hello, policy, ErrorCode::kCapabilities,
                  "backup lacks required capabilities " + Hex(missing), policy.version_max);
  }
  // A stream this backup's Xen could not restore at failover would make every
  // "committed" checkpoint a false promise: refuse now, while the primary
  // still runs and the operator can act.
  if ((hello.capabilities & kCapXenRelease) != 0 && policy.xen_release != 0 &&
      hello.xen_release > policy.xen_release) {
    return Refuse(hello, policy, ErrorCode::kVersion,
                  "the primary saves the guest with Xen " + XenReleaseName(hello.xen_release) +
                      ", this backup restores with Xen " + XenReleaseName(policy.xen_release) +
                      ": Xen cannot restore a guest saved by a newer release; upgrade the backup first",
                  policy.version_max);
  }
  if (policy.max_guest_pages != 0 && hello.guest_pages > policy.max_guest_pages) {
    return Refuse(hello, policy, ErrorCode::kResource,
                  "guest of " + std::to_string(hello.guest_pages) +
                      " pages exceeds this backup's limit of " +
                      std::to_string(policy.max_guest_pages),
                  policy.version_max);
  }
  if (policy.max_cache_pages != 0 && hello.cache_pages > policy.max_cache_pages) {
    return Refuse(hello, policy, ErrorCode::kResource,
                  "cache of " + std::to_string(hello.cache_pages) +
                      " pages exceeds this backup's limit of " +
                      std::to_string(policy.max_cache_pages),
                  policy.version_max);
  }
  if (!policy.expected_identity.empty() && hello.identity != policy.expected_identity) {
    return Refuse(hello, policy, ErrorCode::kIdentity,
                  "this backup serves guest '" + policy.expected_identity + "', not '" +
                      Printable(hello.identity) + "'",
                  policy.version_max);
  }
  if (!policy.busy_with.empty() && hello.identity != policy.busy_with) {
    return Refuse(hello, policy, ErrorCode::kBusy,
                  "backup is replicating guest '" + policy.busy_with + "'", policy.version_max);
  }
  HelloAck a;
  a.accepted = true;
  a.version = hi;
  a.error = ErrorCode::kNone;
  a.capabilities = hello.capabilities & policy.supported_capabilities;
  a.session_id = hello.session_id;
  a.backup_epoch = policy.committed_epoch;
  // Tells a primary that may resize the cache mid-session how far it may go,
  // so it can refuse an oversized request before sending anything.
  a.max_cache_pages = policy.max_cache_pages == 0 ? HelloAck::kNoCacheLimit : policy.max_cache_pages;
  return a;
}

Status CheckHelloAck(const Hello& sent, const HelloAck& ack) {
  if (ack.session_id != sent.session_id) {
    return Status::Corruption("HELLO_ACK answers session " + Hex(ack.session_id) + ", not ours " +
                              Hex(sent.session_id));
  }
  if (!ack.accepted) {
    return Status::Unsupported("backup refused the session: " +
                               ErrorCodeName(static_cast<uint16_t>(ack.error)) + ": " +
                               Printable(ack.text));
  }
  if (ack.version < sent.version_min || ack.version > sent.version_max) {
    return Status::Corruption("backup chose protocol version " + std::to_string(ack.version) +
                              " outside the offered " + std::to_string(sent.version_min) + ".." +
                              std::to_string(sent.version_max));
  }
  if ((ack.capabilities & ~sent.capabilities) != 0) {
    return Status::Corruption("backup accepted capabilities " +
                              Hex(ack.capabilities & ~sent.capabilities) + " that were not offered");
  }
  if ((sent.required & ~ack.capabilities) != 0) {
    return Status::Corruption("backup accepted without required capabilities " +
                              Hex(sent.required & ~ack.capabilities));
  }
  return Status::Ok();
}

}  // namespace romulus::protocol
