// DISK_DIGESTS (docs/PROTOCOL.md §3.11): the chunk hash, the frame's
// encoding, and the table's transfer over a real socketpair, including the
// ways a broken or hostile backup could describe its disks wrongly (the
// primary must refuse the table rather than leave out a chunk on its word).
#include "protocol/disk_digests.h"

#include <gtest/gtest.h>

#include <thread>

#include "buffer/reusable_buffer.h"
#include "protocol/frame.h"
#include "tests/engine/stream_pair.h"

namespace romulus::protocol {
namespace {

using namespace std::chrono_literals;

struct Pair {
  std::unique_ptr<transport::Stream> backup, primary;
};

Pair MakePair() {
  auto p = test_engine::MakeStreamPair();
  return Pair{std::move(p.backup), std::move(p.primary)};
}

DiskInfo Disk(uint32_t id, uint64_t size, const char* name) {
  DiskInfo d;
  d.id = id;
  d.size_bytes = size;
  d.name = name;
  return d;
}

// The hash a test backup gives chunk c of disk index i.
ChunkHash Fake(size_t i, uint64_t c) { return ChunkHash{i * 1000003 + c, ~c}; }

Result<std::vector<std::shared_ptr<const DiskChunkTable>>> Transfer(const std::vector<DiskInfo>& disks,
                                                                   const DescribeDiskFn& describe, Status* sent) {
  Pair p = MakePair();
  FrameWriter w(p.backup.get());
  std::thread t([&] {
    *sent = SendDiskDigests(&w, disks, describe, 5s);
    p.backup.reset();
  });
  buffer::ReusableBuffer rb(0, MaxPayloadFor(static_cast<uint8_t>(FrameType::kDiskDigests)));
  FrameReader r(p.primary.get(), &rb);
  auto got = ReceiveDiskDigests(&r, disks, 5s);
  t.join();
  return got;
}

Status ReceiveRaw(const std::vector<DiskDigests>& frames, const std::vector<DiskInfo>& disks) {
  Pair p = MakePair();
  FrameWriter w(p.backup.get());
  for (const DiskDigests& d : frames) EXPECT_TRUE(w.Send(d, 0).ok());
  p.backup.reset();
  buffer::ReusableBuffer rb(0, MaxPayloadFor(static_cast<uint8_t>(FrameType::kDiskDigests)));
  FrameReader r(p.primary.get(), &rb);
  return ReceiveDiskDigests(&r, disks, 5s).status();
}

TEST(DiskChunkHashTest, ZeroChunkHashIsTheHashOfZeros) {
  std::vector<uint8_t> zeros(kDiskChunkBytes, 0);
  EXPECT_EQ(ZeroChunkHash(kDiskChunkBytes), DiskChunkHash(zeros));
  EXPECT_EQ(ZeroChunkHash(4096), DiskChunkHash(std::span<const uint8_t>(zeros).first(4096)));
  EXPECT_NE(ZeroChunkHash(4096), ZeroChunkHash(8192));
  zeros[12345] = 1;
  EXPECT_NE(ZeroChunkHash(kDiskChunkBytes), DiskChunkHash(zeros));
}

TEST(DiskDigestsTest, EncodesAndDecodesExactly) {
  DiskDigests d;
  d.disk_id = 7;
  d.first_chunk = 4096;
  d.flags = DiskDigests::kLast;
  d.hashes = {ChunkHash{1, 2}, ChunkHash{3, 4}};
  std::vector<uint8_t> out;
  ASSERT_TRUE(d.EncodeTo(&out).ok());
  EXPECT_EQ(out.size(), DiskDigests::kFixedSize + 32);
  auto back = DiskDigests::Decode(out);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->disk_id, 7u);
  EXPECT_EQ(back->first_chunk, 4096u);
  EXPECT_TRUE(back->last());
  EXPECT_EQ(back->hashes, d.hashes);
  // Truncated, one byte too many, unknown flags, reserved bits.
  EXPECT_FALSE(DiskDigests::Decode(std::span<const uint8_t>(out).first(out.size() - 1)).ok());
  out.push_back(0);
  EXPECT_FALSE(DiskDigests::Decode(out).ok());
  out.pop_back();
  out[4] = 0x80;
  EXPECT_FALSE(DiskDigests::Decode(out).ok());
  out[4] = DiskDigests::kLast;
  out[20] = 1;
  EXPECT_FALSE(DiskDigests::Decode(out).ok());
  // An absent disk carries no hash and ends its table; nothing else is absent.
  DiskDigests absent;
  absent.flags = DiskDigests::kLast | DiskDigests::kAbsent;
  ASSERT_TRUE(absent.EncodeTo(&out).ok());
  EXPECT_TRUE(DiskDigests::Decode(out).ok());
  absent.flags = DiskDigests::kAbsent;
  EXPECT_FALSE(absent.EncodeTo(&out).ok());
  DiskDigests empty;
  EXPECT_FALSE(empty.EncodeTo(&out).ok()) << "a range frame without hashes";
  empty.hashes.assign(kMaxChunkHashesPerFrame + 1, ChunkHash{});
  EXPECT_FALSE(empty.EncodeTo(&out).ok());
}

TEST(DiskDigestsTest, TablesArriveWholeInOrderAndAbsentDisksAreNull) {
  // 600 chunks (several frames), an unaligned 3-chunk disk, one not described.
  const std::vector<DiskInfo> disks = {Disk(3, 600 * kDiskChunkBytes, "xvda"),
                                       Disk(9, 2 * kDiskChunkBytes + 512, "xvdb"), Disk(4, kDiskChunkBytes, "xvdc")};
  Status sent;
  auto got = Transfer(
      disks,
      [](size_t i, uint64_t first, std::span<ChunkHash> out) -> Status {
        if (i == 2) return Status::Unsupported("not described");
        for (size_t k = 0; k < out.size(); ++k) out[k] = Fake(i, first + k);
        return Status::Ok();
      },
      &sent);
  ASSERT_TRUE(sent.ok()) << sent.ToString();
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  ASSERT_EQ(got->size(), 3u);
  ASSERT_TRUE((*got)[0] && (*got)[1]);
  EXPECT_FALSE((*got)[2]);
  ASSERT_EQ((*got)[0]->size(), 600u);
  ASSERT_EQ((*got)[1]->size(), 3u);
  for (uint64_t c = 0; c < 600; ++c) ASSERT_EQ((*(*got)[0])[c], Fake(0, c)) << c;
  for (uint64_t c = 0; c < 3; ++c) EXPECT_EQ((*(*got)[1])[c], Fake(1, c));
}

TEST(DiskDigestsTest, ABackupThatCannotReadItsDiskEndsTheExchange) {
  const std::vector<DiskInfo> disks = {Disk(1, 600 * kDiskChunkBytes, "xvda")};
  Status sent;
  auto got = Transfer(
      disks,
      [](size_t, uint64_t first, std::span<ChunkHash> out) -> Status {
        if (first > 0) return Status::Storage("EIO");  // half-described: no ABSENT any more
        for (auto& h : out) h = ChunkHash{1, 1};
        return Status::Ok();
      },
      &sent);
  EXPECT_EQ(sent.code(), Code::kStorage);
  EXPECT_FALSE(got.ok());
}

TEST(DiskDigestsTest, AWrongTableIsRefused) {
  const std::vector<DiskInfo> disks = {Disk(1, 3 * kDiskChunkBytes, "xvda"), Disk(2, kDiskChunkBytes, "xvdb")};
  auto frame = [](uint32_t id, uint64_t first, size_t n, uint32_t flags) {
    DiskDigests d;
    d.disk_id = id;
    d.first_chunk = first;
    d.flags = flags;
    d.hashes.assign(n, ChunkHash{5, 6});
    return d;
  };
  const uint32_t L = DiskDigests::kLast;
  const DiskDigests absent2 = frame(2, 0, 0, L | DiskDigests::kAbsent);
  // The good exchange, as a baseline.
  EXPECT_TRUE(ReceiveRaw({frame(1, 0, 2, 0), frame(1, 2, 1, L), absent2}, disks).ok());
  // Out of order disks, a gap, an overlap, too many chunks, LAST too early
  // or missing, hashes after the table ended, truncated before the end.
  EXPECT_EQ(ReceiveRaw({absent2, frame(1, 0, 3, L)}, disks).code(), Code::kCorruption);
  EXPECT_EQ(ReceiveRaw({frame(1, 0, 1, 0), frame(1, 2, 1, L), absent2}, disks).code(), Code::kCorruption);
  EXPECT_EQ(ReceiveRaw({frame(1, 0, 2, 0), frame(1, 1, 2, L), absent2}, disks).code(), Code::kCorruption);
  EXPECT_EQ(ReceiveRaw({frame(1, 0, 4, L), absent2}, disks).code(), Code::kCorruption);
  EXPECT_EQ(ReceiveRaw({frame(1, 0, 2, L), absent2}, disks).code(), Code::kCorruption);
  EXPECT_EQ(ReceiveRaw({frame(1, 0, 3, 0), absent2}, disks).code(), Code::kCorruption);
  EXPECT_EQ(ReceiveRaw({frame(1, 0, 2, 0), frame(1, 2, 1, L), frame(2, 0, 1, 0)}, disks).code(), Code::kCorruption);
  EXPECT_EQ(ReceiveRaw({frame(1, 0, 2, 0)}, disks).code(), Code::kClosed);
  // A heartbeat in the table (it would restart the per-frame deadline).
  {
    Pair p = MakePair();
    FrameWriter w(p.backup.get());
    EXPECT_TRUE(w.Send(frame(1, 0, 2, 0), 0).ok());
    Heartbeat hb;
    EXPECT_TRUE(w.Send(hb, 0).ok());
    buffer::ReusableBuffer rb(0, MaxPayloadFor(static_cast<uint8_t>(FrameType::kDiskDigests)));
    FrameReader r(p.primary.get(), &rb);
    EXPECT_EQ(ReceiveDiskDigests(&r, disks, 5s).status().code(), Code::kCorruption);
  }
  // Absent after hashes.
  EXPECT_EQ(ReceiveRaw({frame(1, 0, 2, 0), frame(1, 0, 0, L | DiskDigests::kAbsent)}, disks).code(),
            Code::kCorruption);
}

}  // namespace
}  // namespace romulus::protocol
