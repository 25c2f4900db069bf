#include "protocol/messages.h"

#include <gtest/gtest.h>

#include "common/little_endian.h"

namespace romulus::protocol {
namespace {

Hello SampleHello() {
  Hello h;
  h.version_min = 1;
  h.version_max = 3;
  h.capabilities = kCapXenStream | kCapLz4Pages;
  h.required = kCapXenStream;
  h.cache_pages = 16384;
  h.guest_pages = 262144;
  h.session_id = 0xfeedfacecafebeefull;
  h.first_epoch = 17;
  h.heartbeat_ms = 50;
  h.peer_timeout_ms = 500;
  h.resync_reason = ResyncReason::kLinkReset;
  h.identity = "vm-db01 (7f3a-uuid)";
  return h;
}

template <typename M>
M RoundTrip(const M& m) {
  std::vector<uint8_t> buf;
  Status st = m.EncodeTo(&buf);
  EXPECT_TRUE(st.ok()) << st.ToString();
  EXPECT_LE(buf.size(), MaxPayloadFor(uint8_t(M::kType)));
  auto d = M::Decode(buf);
  EXPECT_TRUE(d.ok()) << d.status().ToString();
  return d.ok() ? *d : M{};
}

// Every strict prefix of a valid encoding must be refused, never crash.
template <typename M>
void ExpectPrefixesRejected(const M& m) {
  std::vector<uint8_t> buf;
  ASSERT_TRUE(m.EncodeTo(&buf).ok());
  for (size_t n = 0; n < buf.size(); ++n) {
    auto d = M::Decode({buf.data(), n});
    EXPECT_FALSE(d.ok()) << "prefix of " << n << " bytes accepted";
    if (!d.ok()) {
      EXPECT_EQ(d.status().code(), Code::kCorruption);
    }
  }
}

TEST(Messages, HelloRoundTrip) {
  Hello h = SampleHello();
  Hello d = RoundTrip(h);
  EXPECT_EQ(d.version_min, 1);
  EXPECT_EQ(d.version_max, 3);
  EXPECT_EQ(d.page_size, 4096u);
  EXPECT_EQ(d.capabilities, h.capabilities);
  EXPECT_EQ(d.required, h.required);
  EXPECT_EQ(d.cache_pages, 16384u);
  EXPECT_EQ(d.guest_pages, 262144u);
  EXPECT_EQ(d.session_id, h.session_id);
  EXPECT_EQ(d.first_epoch, 17u);
  EXPECT_EQ(d.heartbeat_ms, 50u);
  EXPECT_EQ(d.peer_timeout_ms, 500u);
  EXPECT_EQ(d.resync_reason, ResyncReason::kLinkReset);
  EXPECT_EQ(d.identity, h.identity);
  ExpectPrefixesRejected(h);
}

TEST(Messages, HelloLayout) {
  std::vector<uint8_t> buf;
  ASSERT_TRUE(SampleHello().EncodeTo(&buf).ok());
  ASSERT_EQ(buf.size(), kHelloFixedSize + SampleHello().identity.size());
  EXPECT_EQ(0, memcmp(buf.data(), "ROMULUS\0", 8));
  EXPECT_EQ(LoadLE16(&buf[8]), 1);
  EXPECT_EQ(LoadLE16(&buf[10]), 3);
  EXPECT_EQ(LoadLE32(&buf[12]), 4096u);
  EXPECT_EQ(LoadLE64(&buf[32]), 16384u);
  EXPECT_EQ(LoadLE64(&buf[56]), 17u);
  EXPECT_EQ(buf[72], 2);
  EXPECT_EQ(LoadLE16(&buf[74]), SampleHello().identity.size());
}

TEST(Messages, HelloRejectsBadInput) {
  std::vector<uint8_t> good;
  ASSERT_TRUE(SampleHello().EncodeTo(&good).ok());

  auto bad = good;
  bad[0] = 'X';
  EXPECT_FALSE(Hello::Decode(bad).ok());

  bad = good;
  StoreLE16(&bad[74], 0);  // empty identity
  EXPECT_FALSE(Hello::Decode(bad).ok());

  bad = good;
  StoreLE16(&bad[74], 300);  // above the bound, regardless of bytes present
  bad.resize(kHelloFixedSize + 300, 'a');
  EXPECT_FALSE(Hello::Decode(bad).ok());

  bad = good;
  bad[kHelloFixedSize] = '\n';  // control character in identity
  EXPECT_FALSE(Hello::Decode(bad).ok());

  bad = good;
  bad[72] = 9;  // unknown resync reason
  EXPECT_FALSE(Hello::Decode(bad).ok());

  bad = good;
  bad[73] = 1;  // reserved
  EXPECT_FALSE(Hello::Decode(bad).ok());

  bad = good;
  StoreLE64(&bad[24], kCapSimGuest);  // requires something not offered
  EXPECT_FALSE(Hello::Decode(bad).ok());

  // Appended extension fields are ignored (layout frozen, PROTOCOL.md §3.1).
  auto ext = good;
  ext.insert(ext.end(), {1, 2, 3, 4});
  EXPECT_TRUE(Hello::Decode(ext).ok());
  ext.resize(2000);
  EXPECT_FALSE(Hello::Decode(ext).ok());
}

TEST(Messages, HelloEncodeValidates) {
  std::vector<uint8_t> buf;
  Hello h = SampleHello();
  h.identity = "";
  EXPECT_EQ(h.EncodeTo(&buf).code(), Code::kInvalidArgument);
  h.identity = std::string(257, 'x');
  EXPECT_EQ(h.EncodeTo(&buf).code(), Code::kInvalidArgument);
  h.identity = std::string(256, 'x');
  EXPECT_TRUE(h.EncodeTo(&buf).ok());
  h.required = kCapSimGuest;
  EXPECT_EQ(h.EncodeTo(&buf).code(), Code::kInvalidArgument);
}

TEST(Messages, HelloAckRoundTrip) {
  HelloAck a;
  a.accepted = true;
  a.version = 2;
  a.capabilities = kCapLz4Pages;
  a.session_id = 99;
  a.backup_epoch = 1234;
  HelloAck d = RoundTrip(a);
  EXPECT_TRUE(d.accepted);
  EXPECT_EQ(d.version, 2);
  EXPECT_EQ(d.error, ErrorCode::kNone);
  EXPECT_EQ(d.capabilities, kCapLz4Pages);
  EXPECT_EQ(d.session_id, 99u);
  EXPECT_EQ(d.backup_epoch, 1234u);
  ExpectPrefixesRejected(a);

  HelloAck r;
  r.accepted = false;
  r.error = ErrorCode::kBusy;
  r.text = "serving vm-other";
  HelloAck dr = RoundTrip(r);
  EXPECT_FALSE(dr.accepted);
  EXPECT_EQ(dr.error, ErrorCode::kBusy);
  EXPECT_EQ(dr.text, "serving vm-other");
  ExpectPrefixesRejected(r);

  std::vector<uint8_t> buf;
  r.error = ErrorCode::kNone;  // refusal without a reason
  EXPECT_EQ(r.EncodeTo(&buf).code(), Code::kInvalidArgument);
  r.error = ErrorCode::kBusy;
  r.text = std::string(257, 'x');
  EXPECT_EQ(r.EncodeTo(&buf).code(), Code::kInvalidArgument);
}

// The kCapCacheResize extension: present exactly when accepted with the bit.
TEST(Messages, HelloAckCacheLimitExtension) {
  HelloAck a;
  a.accepted = true;
  a.capabilities = kCapSimGuest | kCapCacheResize;
  a.session_id = 5;
  a.text = "ok";
  a.max_cache_pages = 262144;
  std::vector<uint8_t> buf;
  ASSERT_TRUE(a.EncodeTo(&buf).ok());
  ASSERT_EQ(buf.size(), kHelloAckFixedSize + 2 + 8);
  EXPECT_EQ(LoadLE64(&buf[kHelloAckFixedSize + 2]), 262144u);  // right after the text
  HelloAck d = RoundTrip(a);
  EXPECT_TRUE(d.has_max_cache());
  EXPECT_EQ(d.max_cache_pages, 262144u);
  EXPECT_EQ(d.text, "ok");
  ExpectPrefixesRejected(a);  // includes the fixed part + text without the limit

  // Later extensions after the limit are ignored.
  buf.push_back(0xee);
  auto longer = HelloAck::Decode(buf);
  ASSERT_TRUE(longer.ok()) << longer.status().ToString();
  EXPECT_EQ(longer->max_cache_pages, 262144u);

  // Without the capability (or refused) the field is neither sent nor read:
  // the same trailing bytes are just an unknown extension.
  a.capabilities = kCapSimGuest;
  ASSERT_TRUE(a.EncodeTo(&buf).ok());
  EXPECT_EQ(buf.size(), kHelloAckFixedSize + 2);
  buf.resize(buf.size() + 8, 0x11);
  auto plain = HelloAck::Decode(buf);
  ASSERT_TRUE(plain.ok());
  EXPECT_FALSE(plain->has_max_cache());
  EXPECT_EQ(plain->max_cache_pages, 0u);

  HelloAck r;
  r.accepted = false;
  r.error = ErrorCode::kResource;
  r.capabilities = kCapAllKnown;  // a refusal lists what the backup supports
  ASSERT_TRUE(r.EncodeTo(&buf).ok());
  EXPECT_EQ(buf.size(), kHelloAckFixedSize);
  EXPECT_TRUE(HelloAck::Decode(buf).ok());
}

TEST(Messages, CacheResizeRoundTripAndStrictDecode) {
  CacheResize c;
  c.cache_pages = 0x0123456789abcdefull;
  std::vector<uint8_t> buf;
  ASSERT_TRUE(c.EncodeTo(&buf).ok());
  ASSERT_EQ(buf.size(), kCacheResizeSize);
  EXPECT_EQ(LoadLE64(&buf[0]), c.cache_pages);
  EXPECT_EQ(LoadLE64(&buf[8]), 0u);
  EXPECT_EQ(RoundTrip(c).cache_pages, c.cache_pages);
  EXPECT_EQ(RoundTrip(CacheResize{}).cache_pages, 0u);  // 0 disables the cache: legal syntax
  ExpectPrefixesRejected(c);
  for (size_t i = 8; i < 16; ++i) {  // any reserved byte set
    std::vector<uint8_t> bad = buf;
    bad[i] = 1;
    auto d = CacheResize::Decode(bad);
    EXPECT_EQ(d.status().code(), Code::kCorruption) << "byte " << i;
  }
  buf.push_back(0);
  EXPECT_EQ(CacheResize::Decode(buf).status().code(), Code::kCorruption);  // too long
}

TEST(Messages, HelloAckInconsistentResultRejected) {
  HelloAck a;
  a.accepted = true;
  std::vector<uint8_t> buf;
  ASSERT_TRUE(a.EncodeTo(&buf).ok());
  StoreLE16(&buf[4], uint16_t(ErrorCode::kBusy));  // accepted with an error code
  EXPECT_FALSE(HelloAck::Decode(buf).ok());
  StoreLE16(&buf[4], 0);
  buf[0] = 2;  // unknown result
  EXPECT_FALSE(HelloAck::Decode(buf).ok());
}

TEST(Messages, EpochEndRoundTripAndExactSize) {
  EpochEnd e{123456789012ull, 7, 42, 8ull << 30, 0xabcdef0123456789ull};
  EpochEnd d = RoundTrip(e);
  EXPECT_EQ(d.page_count, e.page_count);
  EXPECT_EQ(d.state_count, 7u);
  EXPECT_EQ(d.frame_count, 42u);
  EXPECT_EQ(d.payload_bytes, e.payload_bytes);
  EXPECT_EQ(d.digest, e.digest);
  ExpectPrefixesRejected(e);
  std::vector<uint8_t> buf;
  ASSERT_TRUE(e.EncodeTo(&buf).ok());
  EXPECT_EQ(buf.size(), 32u);
  EXPECT_EQ(LoadLE64(&buf[24]), e.digest);
  buf.push_back(0);
  EXPECT_FALSE(EpochEnd::Decode(buf).ok());
}

TEST(Messages, AckRoundTripAndEpochCheck) {
  Ack a{55, 0x1234};
  Ack d = RoundTrip(a);
  EXPECT_EQ(d.epoch, 55u);
  EXPECT_EQ(d.digest, 0x1234u);
  ExpectPrefixesRejected(a);
  std::vector<uint8_t> buf;
  ASSERT_TRUE(a.EncodeTo(&buf).ok());
  EXPECT_TRUE(DecodeAckFrame(55, buf).ok());
  EXPECT_EQ(DecodeAckFrame(56, buf).status().code(), Code::kCorruption);
}

TEST(Messages, HeartbeatRoundTrip) {
  Heartbeat h{111, 222, 333};
  Heartbeat d = RoundTrip(h);
  EXPECT_EQ(d.send_ns, 111u);
  EXPECT_EQ(d.echo_ns, 222u);
  EXPECT_EQ(d.committed, 333u);
  ExpectPrefixesRejected(h);
}

TEST(Messages, ByeRoundTrip) {
  Bye b;
  b.reason = ByeReason::kGuestShutdown;
  b.text = "guest powered off";
  Bye d = RoundTrip(b);
  EXPECT_EQ(d.reason, ByeReason::kGuestShutdown);
  EXPECT_EQ(d.text, b.text);
  ExpectPrefixesRejected(b);
  std::vector<uint8_t> buf;
  ASSERT_TRUE(b.EncodeTo(&buf).ok());
  buf.push_back('!');  // trailing garbage
  EXPECT_FALSE(Bye::Decode(buf).ok());
  buf.pop_back();
  buf[0] = 200;
  EXPECT_FALSE(Bye::Decode(buf).ok());
}

TEST(Messages, ErrorRoundTripAndTruncatingMake) {
  Error e = Error::Make(ErrorCode::kDigestMismatch, "epoch 9: digest 1 != 2");
  Error d = RoundTrip(e);
  EXPECT_EQ(d.code, uint16_t(ErrorCode::kDigestMismatch));
  EXPECT_EQ(d.text, e.text);
  ExpectPrefixesRejected(e);

  Error big = Error::Make(ErrorCode::kInternal, std::string(5000, 'z'));
  EXPECT_EQ(big.text.size(), kMaxErrorText);
  EXPECT_EQ(RoundTrip(big).text.size(), kMaxErrorText);

  // Unknown codes survive decoding as numbers.
  Error odd;
  odd.code = 999;
  EXPECT_EQ(RoundTrip(odd).code, 999);
  EXPECT_EQ(ErrorCodeName(999), "code-999");
  EXPECT_EQ(ErrorCodeName(uint16_t(ErrorCode::kBusy)), "busy");
}

TEST(Messages, ErrorCodeForStatus) {
  EXPECT_EQ(ErrorCodeFor(Status::Corruption("frame payload checksum mismatch")), ErrorCode::kChecksum);
  EXPECT_EQ(ErrorCodeFor(Status::Corruption("bad sequence")), ErrorCode::kProtocol);
  EXPECT_EQ(ErrorCodeFor(Status::OutOfRange("too big")), ErrorCode::kResource);
  EXPECT_EQ(ErrorCodeFor(Status::Internal("bug")), ErrorCode::kInternal);
}

TEST(Messages, PrintableSanitises) {
  EXPECT_EQ(Printable("ok\x1b[31m\n"), "ok?[31m?");
}

}  // namespace
}  // namespace romulus::protocol

namespace romulus::protocol {
namespace {

TEST(Messages, HelloXenReleaseExtension) {
  Hello h = SampleHello();
  h.capabilities |= kCapXenRelease;
  h.xen_release = XenRelease(4, 20);
  std::vector<uint8_t> buf;
  ASSERT_TRUE(h.EncodeTo(&buf).ok());
  auto d = Hello::Decode(buf);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->xen_release, XenRelease(4, 20));
  EXPECT_EQ(XenReleaseName(d->xen_release), "4.20");
  // The last 4 bytes are the release, little-endian, after the identity.
  ASSERT_EQ(buf.size(), kHelloFixedSize + h.identity.size() + 4);
  EXPECT_EQ(buf[buf.size() - 4], 20);
  EXPECT_EQ(buf[buf.size() - 2], 4);

  // Truncated: the capability promises 4 bytes that are not there.
  auto cut = buf;
  cut.resize(cut.size() - 2);
  EXPECT_EQ(Hello::Decode(cut).status().code(), Code::kCorruption);
  // Release 0 with the capability is malformed.
  auto zero = buf;
  std::fill(zero.end() - 4, zero.end(), 0);
  EXPECT_EQ(Hello::Decode(zero).status().code(), Code::kCorruption);
  // Without the capability the bytes are a future extension: ignored.
  Hello plain = SampleHello();
  std::vector<uint8_t> pbuf;
  ASSERT_TRUE(plain.EncodeTo(&pbuf).ok());
  pbuf.insert(pbuf.end(), {20, 0, 4, 0});
  auto p = Hello::Decode(pbuf);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->xen_release, 0u);

  // Encoding refuses a release without the bit and the bit without a release.
  Hello bad = SampleHello();
  bad.xen_release = XenRelease(4, 17);
  EXPECT_EQ(bad.EncodeTo(&buf).code(), Code::kInvalidArgument);
  bad.xen_release = 0;
  bad.capabilities |= kCapXenRelease;
  EXPECT_EQ(bad.EncodeTo(&buf).code(), Code::kInvalidArgument);
}

}  // namespace
}  // namespace romulus::protocol
