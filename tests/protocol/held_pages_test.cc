// The HELD table (docs/PROTOCOL.md §3.9): encoding, and the transfer both
// ways over a real socketpair, including every way a hostile or broken
// backup could describe its image wrongly.
#include "protocol/held_pages.h"

#include <gtest/gtest.h>
#include <sys/socket.h>

#include <thread>

#include "buffer/reusable_buffer.h"
#include "protocol/frame.h"
#include "protocol/messages.h"
#include "transport/fd_stream.h"

namespace romulus::protocol {
namespace {

using namespace std::chrono_literals;

struct Pair {
  std::unique_ptr<transport::Stream> backup, primary;
};

Pair MakePair() {
  int sv[2];
  EXPECT_EQ(0, ::socketpair(AF_UNIX, SOCK_STREAM, 0, sv));
  Pair p;
  p.backup = std::move(*transport::OpenFdStream(sv[0], sv[0], "backup", true));
  p.primary = std::move(*transport::OpenFdStream(sv[1], sv[1], "primary", true));
  return p;
}

std::unique_ptr<MemoryDigest> Digest(uint64_t pages) { return std::move(*MemoryDigest::Create(pages)); }

// Sends `held` from one end, receives it at the other into a digest of
// `guest_pages`; returns the receiver's status.
Status Transfer(const MemoryDigest& held, MemoryDigest* into) {
  Pair p = MakePair();
  FrameWriter w(p.backup.get());
  Status sent;
  std::thread t([&] { sent = SendHeldPages(&w, held, 5s); });
  buffer::ReusableBuffer rb(0, MaxPayloadFor(static_cast<uint8_t>(FrameType::kHeld)));
  FrameReader r(p.primary.get(), &rb);
  Status got = ReceiveHeldPages(&r, into, 5s);
  t.join();
  EXPECT_TRUE(sent.ok()) << sent.ToString();
  return got;
}

// Sends raw HELD messages (as a hostile backup could), returns what the
// primary's reader makes of them.
Status Receive(const std::vector<Held>& frames, uint64_t guest_pages) {
  Pair p = MakePair();
  FrameWriter w(p.backup.get());
  for (const Held& h : frames) EXPECT_TRUE(w.Send(h, 0).ok());
  p.backup.reset();  // EOF after the frames
  buffer::ReusableBuffer rb(0, MaxPayloadFor(static_cast<uint8_t>(FrameType::kHeld)));
  FrameReader r(p.primary.get(), &rb);
  auto into = Digest(guest_pages);
  return ReceiveHeldPages(&r, into.get(), 5s);
}

Held Range(uint64_t first, std::vector<uint64_t> hashes) {
  Held h;
  h.first_pfn = first;
  h.hashes = std::move(hashes);
  return h;
}

Held Last(uint64_t digest) {
  Held h;
  h.flags = Held::kLast;
  h.digest = digest;
  return h;
}

TEST(HeldPages, EncodesAndDecodesARangeAndTheLastFrame) {
  std::vector<uint8_t> buf;
  ASSERT_TRUE(Range(5, {1, 2, 3}).EncodeTo(&buf).ok());
  EXPECT_EQ(buf.size(), 16u + 24u);
  auto r = Held::Decode(buf);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->first_pfn, 5u);
  EXPECT_EQ(r->hashes, (std::vector<uint64_t>{1, 2, 3}));
  EXPECT_FALSE(r->last());
  ASSERT_TRUE(Last(42).EncodeTo(&buf).ok());
  r = Held::Decode(buf);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->last());
  EXPECT_EQ(r->digest, 42u);
}

TEST(HeldPages, DecodeRejectsMalformedPayloads) {
  std::vector<uint8_t> buf;
  ASSERT_TRUE(Range(0, {7, 8}).EncodeTo(&buf).ok());
  auto cut = buf;
  cut.pop_back();
  EXPECT_FALSE(Held::Decode(cut).ok());  // size does not match the count
  auto more = buf;
  more.push_back(0);
  EXPECT_FALSE(Held::Decode(more).ok());
  auto flags = buf;
  flags[12] = 0x02;  // an unknown flag
  EXPECT_FALSE(Held::Decode(flags).ok());
  auto zero = buf;
  zero[8] = zero[9] = zero[10] = zero[11] = 0;  // count 0 in a range frame
  EXPECT_FALSE(Held::Decode(zero).ok());
  auto huge = buf;
  huge[8] = 0xff, huge[9] = 0xff, huge[10] = 0xff, huge[11] = 0x7f;  // count far above the maximum
  EXPECT_FALSE(Held::Decode(huge).ok());
  EXPECT_FALSE(Held::Decode(std::vector<uint8_t>(10)).ok());
  // Encoding refuses what decoding would refuse.
  EXPECT_FALSE(Range(0, {}).EncodeTo(&buf).ok());
  EXPECT_FALSE(Range(0, std::vector<uint64_t>(Held::kMaxHashes + 1, 1)).EncodeTo(&buf).ok());
}

TEST(HeldPages, TheTableArrivesExactlyAndZeroPagesCostNothing) {
  const uint64_t pages = 3 * Held::kMaxHashes + 17;
  auto held = Digest(pages);
  // Sparse data: a lone page, a run across a frame's worth, the last page.
  held->SetHash(3, 0x1111);
  for (uint64_t p = 9000; p < 9000 + Held::kMaxHashes + 5; ++p) held->SetHash(p, p * 77 + 1);
  held->SetHash(pages - 1, 0x2222);
  auto into = Digest(pages);
  into->SetHash(100, 5);  // stale content must be reset
  ASSERT_TRUE(Transfer(*held, into.get()).ok());
  EXPECT_EQ(into->value(), held->value());
  for (uint64_t p = 0; p < pages; ++p) ASSERT_EQ(into->hash(p), held->hash(p)) << "pfn " << p;
}

TEST(HeldPages, AnAllZeroImageIsOneFrame) {
  auto held = Digest(1 << 20);  // 4 GiB of zero pages
  auto into = Digest(1 << 20);
  Pair p = MakePair();
  FrameWriter w(p.backup.get());
  ASSERT_TRUE(SendHeldPages(&w, *held, 5s).ok());
  EXPECT_EQ(w.frames_written(), 1u);
  buffer::ReusableBuffer rb(0, 1 << 17);
  FrameReader r(p.primary.get(), &rb);
  ASSERT_TRUE(ReceiveHeldPages(&r, into.get(), 5s).ok());
  EXPECT_EQ(into->value(), 0u);
}

TEST(HeldPages, TheReceiverRejectsEveryInconsistentTable) {
  // A range beyond the guest.
  EXPECT_EQ(Receive({Range(98, {1, 2, 3}), Last(6)}, 100).code(), Code::kCorruption);
  EXPECT_EQ(Receive({Range(100, {1}), Last(1)}, 100).code(), Code::kCorruption);
  // Overlapping or descending ranges.
  EXPECT_EQ(Receive({Range(10, {1, 2}), Range(11, {3}), Last(6)}, 100).code(), Code::kCorruption);
  EXPECT_EQ(Receive({Range(10, {1}), Range(5, {3}), Last(4)}, 100).code(), Code::kCorruption);
  // A digest that does not match the hashes.
  EXPECT_EQ(Receive({Range(10, {1, 2}), Last(4)}, 100).code(), Code::kCorruption);
  // No last frame: the stream ends.
  EXPECT_EQ(Receive({Range(10, {1, 2})}, 100).code(), Code::kClosed);
  // And a good one, for contrast.
  EXPECT_TRUE(Receive({Range(10, {1, 2}), Range(12, {3}), Last(6)}, 100).ok());
}

TEST(HeldPages, AnErrorInsteadOfTheTableIsReportedWithItsText) {
  Pair p = MakePair();
  FrameWriter w(p.backup.get());
  ASSERT_TRUE(w.Send(Error::Make(ErrorCode::kResource, "disk full"), 0).ok());
  buffer::ReusableBuffer rb(0, 1 << 17);
  FrameReader r(p.primary.get(), &rb);
  auto into = Digest(10);
  Status st = ReceiveHeldPages(&r, into.get(), 5s);
  EXPECT_EQ(st.code(), Code::kCorruption);
  EXPECT_NE(st.message().find("resource: disk full"), std::string::npos) << st.ToString();
}

TEST(HeldPages, ASilentBackupTimesOut) {
  Pair p = MakePair();
  buffer::ReusableBuffer rb(0, 1 << 17);
  FrameReader r(p.primary.get(), &rb);
  auto into = Digest(10);
  EXPECT_EQ(ReceiveHeldPages(&r, into.get(), 50ms).code(), Code::kTimeout);
}

}  // namespace
}  // namespace romulus::protocol
