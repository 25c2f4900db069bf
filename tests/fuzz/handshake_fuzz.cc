// libFuzzer: HELLO / HELLO_ACK decoding and the handshake policy on both
// sides. The first byte selects a backup policy so the fuzzer explores
// refusals as well as acceptances. Invariants: Negotiate() always yields an
// encodable HELLO_ACK; an accepted one passes the primary's check; a
// refused one never does.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <vector>

#include "protocol/handshake.h"
#include "protocol/messages.h"

using namespace romulus::protocol;
using romulus::Status;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  uint8_t selector = data[0];
  std::span<const uint8_t> in(data + 1, size - 1);

  BackupPolicy policy;
  if (selector & 1) policy.max_guest_pages = 1 << 20;
  if (selector & 2) policy.max_cache_pages = 1 << 14;
  if (selector & 4) policy.expected_identity = "vm1";
  if (selector & 8) policy.busy_with = "vm2";
  if (selector & 16) policy.supported_capabilities = kCapSimGuest;
  if (selector & 32) policy.version_max = 3;

  auto hello = Hello::Decode(in);
  if (hello.ok()) {
    (void)ValidateHello(*hello);
    HelloAck ack = Negotiate(*hello, policy);
    std::vector<uint8_t> buf;
    if (!ack.EncodeTo(&buf).ok()) std::abort();
    auto back = HelloAck::Decode(buf);
    if (!back.ok()) std::abort();
    Status st = CheckHelloAck(*hello, *back);
    if (ack.accepted != st.ok()) std::abort();
    // Cache resizing agreed: the backup's limit arrives intact.
    if (back->has_max_cache() != ack.has_max_cache()) std::abort();
    if (ack.has_max_cache() &&
        (back->max_cache_pages != ack.max_cache_pages ||
         ack.max_cache_pages != (policy.max_cache_pages ? policy.max_cache_pages : HelloAck::kNoCacheLimit))) {
      std::abort();
    }
  }

  // Primary side: an arbitrary HELLO_ACK against a fixed HELLO.
  auto ack = HelloAck::Decode(in);
  if (ack.ok()) {
    Hello sent;
    sent.identity = "vm1";
    sent.guest_pages = 1024;
    sent.capabilities = kCapSimGuest | kCapLz4Pages | kCapCacheResize;
    sent.required = kCapSimGuest;
    sent.session_id = ack->session_id;
    Status st = CheckHelloAck(sent, *ack);
    if (st.ok() && (!ack->accepted || (ack->capabilities & ~sent.capabilities) ||
                    !(ack->capabilities & kCapSimGuest))) {
      std::abort();
    }
  }
  return 0;
}
