#include "protocol/frame.h"

#include <gtest/gtest.h>

#include <vector>

#include "common/little_endian.h"

namespace romulus::protocol {
namespace {

std::vector<uint8_t> MakeFrame(FrameType type, uint64_t epoch, std::vector<uint8_t> payload,
                               uint8_t flags = 0) {
  std::vector<uint8_t> f(kFrameHeaderSize + payload.size());
  std::copy(payload.begin(), payload.end(), f.begin() + kFrameHeaderSize);
  EncodeFrameHeader(f.data(), type, epoch, {f.data() + kFrameHeaderSize, payload.size()}, flags);
  return f;
}

// Re-seals a header after deliberately editing its fields, so the test
// exercises the field check rather than the checksum.
void Reseal(std::vector<uint8_t>& f) { StoreLE32(f.data() + 20, Check32({f.data(), 20})); }

TEST(Frame, HeaderLayoutIsExactlyAsDocumented) {
  auto f = MakeFrame(FrameType::kPages, 0x1122334455667788ull, {1, 2, 3}, 0);
  ASSERT_EQ(f.size(), 27u);
  EXPECT_EQ(f[0], 0x10);
  EXPECT_EQ(f[1], 0);
  EXPECT_EQ(LoadLE16(&f[2]), 0);
  EXPECT_EQ(LoadLE32(&f[4]), 3u);
  EXPECT_EQ(LoadLE64(&f[8]), 0x1122334455667788ull);
  EXPECT_EQ(LoadLE32(&f[16]), Check32({f.data() + 24, 3}));
  EXPECT_EQ(LoadLE32(&f[20]), Check32({f.data(), 20}));
}

TEST(Frame, RoundTripEveryKnownType) {
  for (FrameType t : {FrameType::kHello, FrameType::kHelloAck, FrameType::kPages, FrameType::kState,
                      FrameType::kEpochEnd, FrameType::kAck, FrameType::kCacheResize, FrameType::kHeartbeat,
                      FrameType::kBye, FrameType::kError}) {
    std::vector<uint8_t> payload(std::min<size_t>(MaxPayloadFor(uint8_t(t)), 16), 0x5a);
    auto f = MakeFrame(t, 42, payload);
    auto h = DecodeFrameHeader(f);
    ASSERT_TRUE(h.ok()) << FrameTypeName(uint8_t(t)) << ": " << h.status().ToString();
    EXPECT_EQ(h->frame_type(), t);
    EXPECT_EQ(h->epoch, 42u);
    EXPECT_EQ(h->length, payload.size());
    EXPECT_TRUE(VerifyPayload(*h, {f.data() + kFrameHeaderSize, payload.size()}).ok());
  }
}

TEST(Frame, EmptyPayload) {
  auto f = MakeFrame(FrameType::kBye, 0, {});
  auto h = DecodeFrameHeader(f);
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h->length, 0u);
  EXPECT_TRUE(VerifyPayload(*h, {}).ok());
}

TEST(Frame, AnySingleByteCorruptionIsDetected) {
  std::vector<uint8_t> payload(300);
  for (size_t i = 0; i < payload.size(); ++i) payload[i] = uint8_t(i * 7 + 1);
  const auto good = MakeFrame(FrameType::kState, 9, payload, kFlagMore);
  for (size_t pos = 0; pos < good.size(); ++pos) {
    for (uint8_t delta : {uint8_t{1}, uint8_t{0x80}, uint8_t{0xff}}) {
      auto f = good;
      f[pos] ^= delta;
      auto h = DecodeFrameHeader(f);
      bool detected = !h.ok() || !VerifyPayload(*h, {f.data() + kFrameHeaderSize,
                                                     f.size() - kFrameHeaderSize}).ok();
      EXPECT_TRUE(detected) << "byte " << pos << " ^ " << int(delta) << " went unnoticed";
      if (pos < kFrameHeaderSize) {
        // Header damage is caught before the payload is even looked at.
        EXPECT_FALSE(h.ok()) << "header byte " << pos;
      }
    }
  }
}

TEST(Frame, OversizeLengthRejectedFromHeaderAlone) {
  // Only the 24 header bytes exist: the decision is made before any payload
  // would be allocated or read.
  uint8_t hdr[kFrameHeaderSize];
  std::vector<uint8_t> dummy;
  EncodeFrameHeader(hdr, FrameType::kPages, 1, dummy);
  StoreLE32(hdr + 4, uint32_t(kMaxPayload + 1));
  StoreLE32(hdr + 20, Check32({hdr, 20}));
  auto h = DecodeFrameHeader(hdr);
  ASSERT_FALSE(h.ok());
  EXPECT_EQ(h.status().code(), Code::kOutOfRange);

  StoreLE32(hdr + 4, 0xffffffffu);
  StoreLE32(hdr + 20, Check32({hdr, 20}));
  EXPECT_EQ(DecodeFrameHeader(hdr).status().code(), Code::kOutOfRange);
}

TEST(Frame, ControlFramesHaveTinyLimits) {
  for (auto [t, max] : {std::pair{FrameType::kAck, 16u}, {FrameType::kCacheResize, 16u}, {FrameType::kHeartbeat, 24u},
                        {FrameType::kEpochEnd, 32u}, {FrameType::kHello, 1024u},
                        {FrameType::kError, 1028u}}) {
    uint8_t hdr[kFrameHeaderSize];
    EncodeFrameHeader(hdr, t, 1, {});
    StoreLE32(hdr + 4, max);
    StoreLE32(hdr + 20, Check32({hdr, 20}));
    EXPECT_TRUE(DecodeFrameHeader(hdr).ok());
    StoreLE32(hdr + 4, max + 1);
    StoreLE32(hdr + 20, Check32({hdr, 20}));
    auto h = DecodeFrameHeader(hdr);
    EXPECT_EQ(h.status().code(), Code::kOutOfRange) << FrameTypeName(uint8_t(t));
  }
  EXPECT_EQ(MaxPayloadFor(uint8_t(FrameType::kPages)), kMaxPayload);
}

TEST(Frame, UnknownTypeIsErrorUnlessIgnorable) {
  auto f = MakeFrame(FrameType::kBye, 0, {});
  f[0] = 0x7e;
  Reseal(f);
  auto h = DecodeFrameHeader(f);
  EXPECT_EQ(h.status().code(), Code::kUnsupported);
  EXPECT_NE(h.status().message().find("0x7e"), std::string::npos);

  f[1] = kFlagIgnorable;
  Reseal(f);
  h = DecodeFrameHeader(f);
  ASSERT_TRUE(h.ok());
  EXPECT_FALSE(h->known());
}

TEST(Frame, ReservedAndUndefinedFlagsRejected) {
  auto f = MakeFrame(FrameType::kPages, 1, {1});
  f[2] = 1;
  Reseal(f);
  EXPECT_EQ(DecodeFrameHeader(f).status().code(), Code::kCorruption);

  f = MakeFrame(FrameType::kPages, 1, {1});
  f[1] = kFlagMore;  // MORE is only defined for STATE
  Reseal(f);
  EXPECT_EQ(DecodeFrameHeader(f).status().code(), Code::kCorruption);

  f = MakeFrame(FrameType::kState, 1, {1}, kFlagMore);
  auto h = DecodeFrameHeader(f);
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h->flags, kFlagMore);
}

TEST(Frame, TruncatedHeaderAndPayload) {
  auto f = MakeFrame(FrameType::kPages, 1, {1, 2, 3, 4});
  EXPECT_EQ(DecodeFrameHeader({f.data(), 23}).status().code(), Code::kCorruption);
  auto h = DecodeFrameHeader(f);
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(VerifyPayload(*h, {f.data() + kFrameHeaderSize, 3}).code(), Code::kCorruption);
}

TEST(Frame, TlsRecordAtPlaintextEndpointIsNamed) {
  // A TLS ClientHello record header, then arbitrary bytes.
  std::vector<uint8_t> tls = {0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 0,
                              0,    0,    0,    0,    0,    0,    0,    0,    0,    0,    0,    0};
  auto h = DecodeFrameHeader(tls);
  EXPECT_EQ(h.status().code(), Code::kUnauthenticated);
  EXPECT_TRUE(LooksLikeTls(tls));
}

TEST(Frame, CheckFrameSequence) {
  std::vector<uint8_t> buf;
  for (int i = 0; i < 3; ++i) {
    auto f = MakeFrame(FrameType::kPages, 5, std::vector<uint8_t>(100 + i, uint8_t(i)));
    buf.insert(buf.end(), f.begin(), f.end());
  }
  size_t n = 0;
  EXPECT_TRUE(CheckFrameSequence(buf, &n).ok());
  EXPECT_EQ(n, 3u);
  EXPECT_EQ(CheckFrameSequence({buf.data(), buf.size() - 1}).code(), Code::kInternal);
  EXPECT_EQ(CheckFrameSequence({buf.data(), 30}).code(), Code::kInternal);
  auto bad = buf;
  bad[kFrameHeaderSize + 100 + 4] ^= 1;  // second header's length
  EXPECT_EQ(CheckFrameSequence(bad).code(), Code::kInternal);
  EXPECT_TRUE(CheckFrameSequence({}).ok());
}

}  // namespace
}  // namespace romulus::protocol
