// libFuzzer: the tap protocol's parsers (disk/tap_wire.h) on arbitrary
// bytes. The first 16 bytes are a header, the rest a payload fed to every
// payload decoder. Invariants: nothing reads past its span; an accepted
// header's length lies within its type's bounds; every accepted payload
// re-encodes to the same bytes (ERROR: to the same code and printable text).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>
#include <span>

#include "disk/tap_wire.h"

using namespace romulus::disk::tap;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size >= kHeaderSize) {
    auto h = DecodeHeader(std::span<const uint8_t, kHeaderSize>(data, kHeaderSize));
    if (h.ok()) {
      if (h->length > MaxPayload(h->type) || h->length < MinPayload(h->type)) std::abort();
      uint8_t back[kHeaderSize];
      EncodeHeader(back, h->type, h->length);
      if (std::memcmp(back, data, kHeaderSize) != 0) std::abort();
    }
  }
  std::span<const uint8_t> p(data, size);
  if (size >= kHeaderSize) p = p.subspan(kHeaderSize);

  if (auto hello = DecodeHello(p); hello.ok()) {
    if (!IsCleanName(hello->name) || hello->disk_size == 0 || hello->disk_size % 512 != 0) std::abort();
    uint8_t back[kHelloFixed + kMaxName];
    size_t n = EncodeHello(*hello, back);
    if (n != p.size() || (n != 0 && std::memcmp(back, p.data(), n) != 0)) std::abort();
  }
  if (auto pause = DecodePause(p); pause.ok()) {
    uint8_t back[kPauseChangedSize];
    const size_t n = EncodePause(back, *pause);
    if (n != p.size() || (n != 0 && std::memcmp(back, p.data(), n) != 0)) std::abort();
  }
  if (auto paused = DecodePaused(p); paused.ok()) {
    uint8_t back[kPausedChangedSize];
    const size_t n = EncodePaused(back, *paused);
    if (n != p.size() || (n != 0 && std::memcmp(back, p.data(), n) != 0)) std::abort();
  }
  if (auto acked = DecodeAcked(p); acked.ok()) {
    uint8_t back[kAckedSize];
    EncodeAcked(back, *acked);
    if (*acked == 0 || std::memcmp(back, p.data(), kAckedSize) != 0) std::abort();
  }
  if (auto floor = DecodeFloor(p); floor.ok()) {
    uint8_t back[kFloorSize];
    EncodeFloor(back, *floor);
    if (p.size() != kFloorSize || std::memcmp(back, p.data(), kFloorSize) != 0) std::abort();
  }
  if (auto digests = DecodeDigests(p); digests.ok()) {
    if (digests->hashes.empty() || digests->hashes.size() > kMaxDigestsPerMessage) std::abort();
    std::vector<uint8_t> back(kDigestsFixed + 16 * digests->hashes.size());
    const size_t n = EncodeDigests(*digests, back);
    if (n != p.size() || (n != 0 && std::memcmp(back.data(), p.data(), n) != 0)) std::abort();
  }
  if (auto seal = DecodeSeal(p); seal.ok()) {
    if (seal->timeout_ms == 0 || seal->timeout_ms > kMaxSealTimeoutMs) std::abort();
    uint8_t back[kSealSize];
    EncodeSeal(back, *seal);
    if (std::memcmp(back, p.data(), kSealSize) != 0) std::abort();
  }
  if (auto sealed = DecodeSealed(p); sealed.ok()) {
    uint8_t back[kSealedSyncSize];
    const size_t n = EncodeSealed(back, *sealed);
    if (n != p.size() || (n != 0 && std::memcmp(back, p.data(), n) != 0)) std::abort();
  }
  if (auto err = DecodeError(p); err.ok()) {
    if (err->text.size() > kMaxErrorText) std::abort();
    for (char c : err->text) {
      if (c < 0x20 || c > 0x7e) std::abort();
    }
    uint8_t back[kErrorFixed + kMaxErrorText];
    size_t n = EncodeError(back, err->code, err->text);
    auto again = DecodeError(std::span<const uint8_t>(back, n));
    if (!again.ok() || again->code != err->code || again->text != err->text) std::abort();
  }
  return 0;
}
