// libFuzzer: frame header + payload parsing and every control-message
// decoder on arbitrary bytes. Invariants checked beyond "no crash":
//   - an accepted header's length is within the type's bound;
//   - a decoded message re-encodes, and that encoding decodes to the same
//     bytes again (no lossy or non-canonical acceptance);
//   - CheckFrameSequence never reads past the input.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <vector>

#include "protocol/frame.h"
#include "protocol/disk_digests.h"
#include "protocol/messages.h"

using namespace romulus::protocol;

namespace {

template <typename M>
void DecodeReencode(std::span<const uint8_t> payload) {
  auto m = M::Decode(payload);
  if (!m.ok()) return;
  std::vector<uint8_t> a, b;
  if (!m->EncodeTo(&a).ok()) std::abort();  // anything decodable must be encodable
  auto again = M::Decode(a);
  if (!again.ok()) std::abort();
  if (!again->EncodeTo(&b).ok() || a != b) std::abort();
  if (a.size() > MaxPayloadFor(static_cast<uint8_t>(M::kType))) std::abort();
}

void DecodeAll(std::span<const uint8_t> payload) {
  DecodeReencode<Hello>(payload);
  DecodeReencode<HelloAck>(payload);
  DecodeReencode<EpochEnd>(payload);
  DecodeReencode<Ack>(payload);
  DecodeReencode<Heartbeat>(payload);
  DecodeReencode<CacheResize>(payload);
  DecodeReencode<Held>(payload);
  DecodeReencode<DiskDigests>(payload);
  DecodeReencode<Bye>(payload);
  DecodeReencode<Error>(payload);
  (void)DecodeAckFrame(7, payload);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const uint8_t> in(data, size);

  // 1. As a stream of frames, exactly as FrameReader consumes them.
  size_t off = 0;
  while (in.size() - off >= kFrameHeaderSize) {
    auto h = DecodeFrameHeader(in.subspan(off, kFrameHeaderSize));
    if (!h.ok()) break;
    if (h->length > MaxPayloadFor(h->type) || h->length > kMaxPayload) std::abort();
    off += kFrameHeaderSize;
    if (in.size() - off < h->length) break;
    auto payload = in.subspan(off, h->length);
    off += h->length;
    if (!VerifyPayload(*h, payload).ok()) break;
    if (h->known()) DecodeAll(payload);
  }
  (void)CheckFrameSequence(in);

  // 2. The raw bytes as every message payload (checksums would otherwise
  //    keep the fuzzer from ever reaching the decoders).
  DecodeAll(in);

  // 3. Frame the input ourselves and parse it back: must round-trip.
  if (size <= 4096) {
    std::vector<uint8_t> frame(kFrameHeaderSize + size);
    if (size) std::copy(data, data + size, frame.begin() + kFrameHeaderSize);
    EncodeFrameHeader(frame.data(), FrameType::kPages, size, {frame.data() + kFrameHeaderSize, size});
    auto h = DecodeFrameHeader(frame);
    if (!h.ok() || h->length != size ||
        !VerifyPayload(*h, {frame.data() + kFrameHeaderSize, size}).ok()) {
      std::abort();
    }
  }
  return 0;
}
