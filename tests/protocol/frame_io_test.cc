// FrameWriter/FrameReader over a real socketpair (FdStream) and over
// loopback TCP: round trips, placement, bounds, resumption, corruption.
#include "protocol/frame_io.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <thread>

#include "common/little_endian.h"
#include "transport/fd_stream.h"

namespace romulus::protocol {
namespace {

using namespace std::chrono_literals;
using transport::DeadlineIn;

struct Pair {
  std::unique_ptr<transport::Stream> a, b;
  int raw_b = -1;  // b's fd, for tests that write raw bytes
};

Pair MakePair() {
  int sv[2];
  EXPECT_EQ(0, ::socketpair(AF_UNIX, SOCK_STREAM, 0, sv));
  Pair p;
  p.a = std::move(*transport::OpenFdStream(sv[0], sv[0], "a", true));
  p.raw_b = sv[1];
  p.b = std::move(*transport::OpenFdStream(sv[1], sv[1], "b", true));
  return p;
}

std::vector<uint8_t> Bytes(size_t n, uint8_t seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = uint8_t(seed + i * 31);
  return v;
}

TEST(FrameIo, RoundTripsDataAndControlFrames) {
  Pair p = MakePair();
  FrameWriter w(p.a.get());
  buffer::ReusableBuffer buf(0, 16 << 20);
  FrameReader r(p.b.get(), &buf);

  std::thread writer([&] {
    EXPECT_TRUE(w.Write(FrameType::kPages, 3, Bytes(100000, 1)).ok());
    EXPECT_TRUE(w.Write(FrameType::kState, 3, Bytes(10, 2), kFlagMore).ok());
    EXPECT_TRUE(w.Send(EpochEnd{5, 1, 2, 100010, 0xdead}, 3).ok());
    EXPECT_TRUE(w.Send(Heartbeat{1, 2, 3}, 3).ok());
  });
  auto f = r.Next(DeadlineIn(10s));
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ(f->type(), FrameType::kPages);
  EXPECT_EQ(f->epoch(), 3u);
  EXPECT_TRUE(std::equal(f->payload.begin(), f->payload.end(), Bytes(100000, 1).begin()));

  f = r.Next(DeadlineIn(10s));
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->type(), FrameType::kState);
  EXPECT_EQ(f->header.flags, kFlagMore);
  EXPECT_EQ(f->payload.size(), 10u);
  EXPECT_EQ(f->offset, 0u);  // kReplace

  f = r.Next(DeadlineIn(10s));
  ASSERT_TRUE(f.ok());
  auto e = EpochEnd::Decode(f->payload);
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->digest, 0xdeadu);

  f = r.Next(DeadlineIn(10s));
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(Heartbeat::Decode(f->payload)->committed, 3u);
  writer.join();
  EXPECT_EQ(w.frames_written(), 4u);
  EXPECT_EQ(r.frames_read(), 4u);
  EXPECT_EQ(w.bytes_written(), r.bytes_read());
}

TEST(FrameIo, AppendPlacementAccumulatesAnEpoch) {
  Pair p = MakePair();
  FrameWriter w(p.a.get());
  buffer::ReusableBuffer buf(0, 1 << 20);
  FrameReader r(p.b.get(), &buf);
  ASSERT_TRUE(w.Write(FrameType::kPages, 1, Bytes(1000, 1)).ok());
  ASSERT_TRUE(w.Write(FrameType::kPages, 1, Bytes(2000, 2)).ok());
  auto f1 = r.Next(DeadlineIn(5s), FrameReader::Placement::kAppend);
  ASSERT_TRUE(f1.ok());
  auto f2 = r.Next(DeadlineIn(5s), FrameReader::Placement::kAppend);
  ASSERT_TRUE(f2.ok());
  EXPECT_EQ(f1->offset, 0u);
  EXPECT_EQ(f2->offset, 1000u);
  EXPECT_EQ(buf.size(), 3000u);
  auto want = Bytes(1000, 1);
  EXPECT_TRUE(std::equal(want.begin(), want.end(), buf.data()));
}

TEST(FrameIo, WriteFramesSendsEngineBuiltBuffer) {
  Pair p = MakePair();
  FrameWriter w(p.a.get());
  // Build two frames in place, the way the engine does in its OutBuffer:
  // reserve header space, write the payload, then fill the header.
  std::vector<uint8_t> out(2 * kFrameHeaderSize + 300);
  uint8_t* h1 = out.data();
  auto pl1 = Bytes(100, 5);
  std::copy(pl1.begin(), pl1.end(), h1 + kFrameHeaderSize);
  EncodeFrameHeader(h1, FrameType::kPages, 8, {h1 + kFrameHeaderSize, 100});
  uint8_t* h2 = h1 + kFrameHeaderSize + 100;
  auto pl2 = Bytes(200, 6);
  std::copy(pl2.begin(), pl2.end(), h2 + kFrameHeaderSize);
  EncodeFrameHeader(h2, FrameType::kPages, 8, {h2 + kFrameHeaderSize, 200});
  ASSERT_TRUE(w.WriteFrames(out).ok());
  EXPECT_EQ(w.frames_written(), 2u);

  // A malformed buffer is refused before anything is written.
  auto bad = out;
  bad[5] ^= 1;
  EXPECT_EQ(w.WriteFrames(bad).code(), Code::kInternal);
  EXPECT_EQ(w.frames_written(), 2u);

  buffer::ReusableBuffer buf(0, 1 << 20);
  FrameReader r(p.b.get(), &buf);
  auto f = r.Next(DeadlineIn(5s));
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->payload.size(), 100u);
  f = r.Next(DeadlineIn(5s));
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->payload.size(), 200u);
  EXPECT_TRUE(std::equal(pl2.begin(), pl2.end(), f->payload.begin()));
}

TEST(FrameIo, WriterRefusesOversizeAndBadFlags) {
  Pair p = MakePair();
  FrameWriter w(p.a.get());
  std::vector<uint8_t> big(kMaxPayload + 1);
  EXPECT_EQ(w.Write(FrameType::kPages, 1, big).code(), Code::kOutOfRange);
  EXPECT_EQ(w.Write(FrameType::kAck, 1, Bytes(17, 0)).code(), Code::kOutOfRange);
  EXPECT_EQ(w.Write(FrameType::kPages, 1, Bytes(1, 0), kFlagMore).code(), Code::kInvalidArgument);
  Hello bad;  // empty identity
  EXPECT_EQ(w.Send(bad, 0).code(), Code::kInvalidArgument);
  EXPECT_EQ(w.frames_written(), 0u);
  // None of these poisoned the writer.
  EXPECT_TRUE(w.Send(Heartbeat{}, 0).ok());
}

TEST(FrameIo, OversizeLengthFromPeerRejectedBeforeAllocation) {
  Pair p = MakePair();
  uint8_t hdr[kFrameHeaderSize];
  EncodeFrameHeader(hdr, FrameType::kPages, 1, {});
  StoreLE32(hdr + 4, 0xfffffff0u);
  StoreLE32(hdr + 20, Check32({hdr, 20}));
  ASSERT_TRUE(p.a->WriteAll(hdr, DeadlineIn(5s)).ok());
  buffer::ReusableBuffer buf(0, 64 << 20);
  FrameReader r(p.b.get(), &buf);
  auto f = r.Next(DeadlineIn(5s));
  EXPECT_EQ(f.status().code(), Code::kOutOfRange);
  EXPECT_EQ(buf.capacity(), 0u);
  EXPECT_EQ(buf.reallocations(), 0u);
  // Sticky: the stream position is lost, the reader stays failed.
  EXPECT_EQ(r.Next(DeadlineIn(1s)).status().code(), Code::kOutOfRange);
}

TEST(FrameIo, ReusableBufferBoundEnforcedBeforeAllocation) {
  Pair p = MakePair();
  FrameWriter w(p.a.get());
  ASSERT_TRUE(w.Write(FrameType::kPages, 1, Bytes(5000, 0)).ok());
  buffer::ReusableBuffer buf(0, 4096);
  FrameReader r(p.b.get(), &buf);
  auto f = r.Next(DeadlineIn(5s));
  EXPECT_EQ(f.status().code(), Code::kOutOfRange);
  EXPECT_EQ(buf.capacity(), 0u);
}

TEST(FrameIo, CorruptPayloadDetected) {
  Pair p = MakePair();
  std::vector<uint8_t> frame(kFrameHeaderSize + 64);
  auto pl = Bytes(64, 9);
  std::copy(pl.begin(), pl.end(), frame.begin() + kFrameHeaderSize);
  EncodeFrameHeader(frame.data(), FrameType::kState, 2, {frame.data() + kFrameHeaderSize, 64});
  frame[kFrameHeaderSize + 10] ^= 0x40;
  ASSERT_TRUE(p.a->WriteAll(frame, DeadlineIn(5s)).ok());
  buffer::ReusableBuffer buf(0, 1 << 20);
  FrameReader r(p.b.get(), &buf);
  auto f = r.Next(DeadlineIn(5s));
  EXPECT_EQ(f.status().code(), Code::kCorruption);
  EXPECT_NE(f.status().message().find("checksum"), std::string::npos);
}

TEST(FrameIo, UnknownTypeErrorsAndIgnorableIsSkipped) {
  for (bool ignorable : {false, true}) {
    Pair p = MakePair();
    uint8_t hdr[kFrameHeaderSize + 3] = {};
    EncodeFrameHeader(hdr, FrameType::kBye, 0, {hdr + kFrameHeaderSize, 3});
    hdr[0] = 0x66;
    hdr[1] = ignorable ? kFlagIgnorable : 0;
    StoreLE32(hdr + 20, Check32({hdr, 20}));
    ASSERT_TRUE(p.a->WriteAll(hdr, DeadlineIn(5s)).ok());
    FrameWriter w(p.a.get());
    ASSERT_TRUE(w.Send(Heartbeat{4, 5, 6}, 1).ok());
    buffer::ReusableBuffer buf(0, 1 << 20);
    FrameReader r(p.b.get(), &buf);
    auto f = r.Next(DeadlineIn(5s));
    if (!ignorable) {
      EXPECT_EQ(f.status().code(), Code::kUnsupported);
    } else {
      ASSERT_TRUE(f.ok()) << f.status().ToString();
      EXPECT_EQ(f->type(), FrameType::kHeartbeat);
      EXPECT_EQ(r.frames_skipped(), 1u);
    }
  }
}

TEST(FrameIo, EofAtBoundaryAndTruncation) {
  {
    Pair p = MakePair();
    p.a->Close();
    buffer::ReusableBuffer buf(0, 1 << 20);
    FrameReader r(p.b.get(), &buf);
    auto f = r.Next(DeadlineIn(5s));
    EXPECT_EQ(f.status().code(), Code::kClosed);
    EXPECT_NE(f.status().message().find("peer closed"), std::string::npos);
  }
  for (size_t cut : {size_t{5}, kFrameHeaderSize + 7}) {
    Pair p = MakePair();
    std::vector<uint8_t> frame(kFrameHeaderSize + 20);
    EncodeFrameHeader(frame.data(), FrameType::kPages, 1, {frame.data() + kFrameHeaderSize, 20});
    ASSERT_TRUE(p.a->WriteAll({frame.data(), cut}, DeadlineIn(5s)).ok());
    p.a->Close();
    buffer::ReusableBuffer buf(0, 1 << 20);
    FrameReader r(p.b.get(), &buf);
    auto f = r.Next(DeadlineIn(5s));
    EXPECT_EQ(f.status().code(), Code::kClosed) << cut;
    EXPECT_NE(f.status().message().find("truncated"), std::string::npos) << f.status().ToString();
  }
}

TEST(FrameIo, TimeoutMidFrameResumes) {
  Pair p = MakePair();
  std::vector<uint8_t> frame(kFrameHeaderSize + 1000);
  auto pl = Bytes(1000, 3);
  std::copy(pl.begin(), pl.end(), frame.begin() + kFrameHeaderSize);
  EncodeFrameHeader(frame.data(), FrameType::kPages, 4, {frame.data() + kFrameHeaderSize, 1000});
  buffer::ReusableBuffer buf(0, 1 << 20);
  FrameReader r(p.b.get(), &buf);

  EXPECT_EQ(r.Next(DeadlineIn(20ms)).status().code(), Code::kTimeout);  // nothing yet
  ASSERT_TRUE(p.a->WriteAll({frame.data(), 10}, DeadlineIn(5s)).ok());
  EXPECT_EQ(r.Next(DeadlineIn(20ms)).status().code(), Code::kTimeout);  // inside the header
  ASSERT_TRUE(p.a->WriteAll({frame.data() + 10, 500}, DeadlineIn(5s)).ok());
  EXPECT_EQ(r.Next(DeadlineIn(20ms)).status().code(), Code::kTimeout);  // inside the payload
  ASSERT_TRUE(p.a->WriteAll({frame.data() + 510, frame.size() - 510}, DeadlineIn(5s)).ok());
  auto f = r.Next(DeadlineIn(5s));
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_TRUE(std::equal(pl.begin(), pl.end(), f->payload.begin()));
}

TEST(FrameIo, ConcurrentWritersNeverInterleaveFrames) {
  Pair p = MakePair();
  FrameWriter w(p.a.get());
  constexpr int kPerThread = 200;
  std::thread big([&] {
    for (int i = 0; i < kPerThread; ++i) {
      ASSERT_TRUE(w.Write(FrameType::kPages, i, Bytes(50000 + i, uint8_t(i))).ok());
    }
  });
  std::thread small([&] {
    for (int i = 0; i < kPerThread; ++i) ASSERT_TRUE(w.Send(Heartbeat{uint64_t(i), 0, 0}, i).ok());
  });
  buffer::ReusableBuffer buf(0, 1 << 20);
  FrameReader r(p.b.get(), &buf);
  int pages = 0, beats = 0;
  for (int n = 0; n < 2 * kPerThread; ++n) {
    auto f = r.Next(DeadlineIn(20s));
    ASSERT_TRUE(f.ok()) << f.status().ToString();
    if (f->type() == FrameType::kPages) {
      EXPECT_EQ(f->epoch(), uint64_t(pages));
      auto want = Bytes(50000 + pages, uint8_t(pages));
      EXPECT_TRUE(std::equal(want.begin(), want.end(), f->payload.begin(), f->payload.end()));
      ++pages;
    } else {
      ASSERT_EQ(f->type(), FrameType::kHeartbeat);
      EXPECT_EQ(Heartbeat::Decode(f->payload)->send_ns, uint64_t(beats));
      ++beats;
    }
  }
  big.join();
  small.join();
  EXPECT_EQ(pages, kPerThread);
  EXPECT_EQ(beats, kPerThread);
}

TEST(FrameIo, WriteErrorIsSticky) {
  Pair p = MakePair();
  FrameWriter w(p.a.get(), 2000ms);
  p.b->Close();
  Status st;
  // The first writes may land in the socket buffer; eventually EPIPE.
  for (int i = 0; i < 1000 && st.ok(); ++i) st = w.Write(FrameType::kPages, 1, Bytes(60000, 0));
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.code(), Code::kClosed) << st.ToString();
  EXPECT_EQ(w.Send(Heartbeat{}, 1).code(), st.code());
}

}  // namespace
}  // namespace romulus::protocol
