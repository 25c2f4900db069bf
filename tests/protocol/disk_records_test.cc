// The disk part of an epoch on the wire (docs/PROTOCOL.md §3.10): the HELLO
// disk list, DISK frames built and parsed (raw and LZ4 writes, zero ranges,
// flushes), the record digest, DISK_END, and every way a frame can lie about
// its records: refused whole, nothing yielded.
#include "protocol/disk_records.h"

#include <gtest/gtest.h>

#include <random>

#include "common/little_endian.h"
#include "protocol/frame.h"

namespace romulus::protocol {
namespace {

using Bytes = std::vector<uint8_t>;

std::vector<DiskInfo> TwoDisks() { return {{7, 64 << 20, "xvda"}, {9, 1 << 20, "xvdb"}}; }

Bytes Pattern(size_t n, uint32_t seed) {
  Bytes b(n);
  std::mt19937 rng(seed);
  for (auto& x : b) x = static_cast<uint8_t>(rng());
  return b;
}

struct Parsed {
  DiskRecordKind kind;
  uint8_t flags;
  uint64_t offset, length;
  Bytes data;
};

std::vector<Parsed> ParseAll(std::span<const uint8_t> payload, Status* status = nullptr) {
  DiskFrameParser p;
  std::vector<Parsed> out;
  Status s = p.Open(payload, TwoDisks());
  if (status) *status = s;
  if (!s.ok()) return out;
  DiskRecord r;
  while (p.Next(&r)) out.push_back({r.kind, r.flags, r.offset, r.length, Bytes(r.data.begin(), r.data.end())});
  return out;
}

TEST(DiskRecords, HelloCarriesTheDiskList) {
  Hello h;
  h.identity = "sim:size=1M";
  h.capabilities = kCapDisk | kCapSimGuest;
  h.required = kCapDisk;
  h.disks = TwoDisks();
  Bytes buf;
  ASSERT_TRUE(h.EncodeTo(&buf).ok());
  auto d = Hello::Decode(buf);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->disks, h.disks);

  // Without the capability the list is not on the wire, and may not be given.
  Hello plain = h;
  plain.capabilities = kCapSimGuest;
  plain.required = 0;
  EXPECT_FALSE(plain.EncodeTo(&buf).ok());
  plain.disks.clear();
  ASSERT_TRUE(plain.EncodeTo(&buf).ok());
  EXPECT_EQ(buf.size(), kHelloFixedSize + plain.identity.size());

  // The largest HELLO still fits its frame bound.
  Hello big = h;
  big.identity.assign(kMaxIdentity, 'i');
  big.disks.clear();
  for (uint32_t i = 0; i < kMaxDisks; ++i) big.disks.push_back({i, 512, std::string(kMaxDiskName, 'd')});
  ASSERT_TRUE(big.EncodeTo(&buf).ok());
  EXPECT_LE(buf.size(), MaxPayloadFor(static_cast<uint8_t>(FrameType::kHello)));
  EXPECT_TRUE(Hello::Decode(buf).ok());
}

TEST(DiskRecords, HelloRejectsBadDiskLists) {
  Hello h;
  h.identity = "g";
  h.capabilities = kCapDisk;
  Bytes buf;
  auto refused = [&](std::vector<DiskInfo> disks) {
    h.disks = std::move(disks);
    return !h.EncodeTo(&buf).ok();
  };
  EXPECT_TRUE(refused({{1, 512, "a"}, {1, 1024, "b"}}));  // duplicate id
  EXPECT_TRUE(refused({{1, 0, "a"}}));                    // empty
  EXPECT_TRUE(refused({{1, 1000, "a"}}));                 // not a sector multiple
  EXPECT_TRUE(refused({{1, 512, ""}}));
  EXPECT_TRUE(refused({{1, 512, "a\nb"}}));
  EXPECT_TRUE(refused({{1, 512, std::string(kMaxDiskName + 1, 'x')}}));
  EXPECT_TRUE(refused(std::vector<DiskInfo>(kMaxDisks + 1, {1, 512, "a"})));

  // On the wire: count too large, truncated entry, zero size, duplicate id.
  h.disks = {{1, 512, "a"}, {2, 512, "b"}};
  ASSERT_TRUE(h.EncodeTo(&buf).ok());
  const size_t list = kHelloFixedSize + 1;  // after the 1-byte identity
  Bytes bad = buf;
  StoreLE16(&bad[list], kMaxDisks + 1);
  EXPECT_FALSE(Hello::Decode(bad).ok());
  bad = buf;
  bad.resize(bad.size() - 1);
  EXPECT_FALSE(Hello::Decode(bad).ok());
  bad = buf;
  StoreLE64(&bad[list + 2 + 4], 0);
  EXPECT_FALSE(Hello::Decode(bad).ok());
  bad = buf;
  StoreLE32(&bad[list + 2 + 14], 1);  // second id = first id
  EXPECT_FALSE(Hello::Decode(bad).ok());
  bad = buf;
  bad.push_back(0xAA);  // trailing extension bytes: ignored
  EXPECT_TRUE(Hello::Decode(bad).ok());
}

TEST(DiskRecords, RoundTripEveryKind) {
  DiskFrameBuilder b;
  b.Reset(7);
  const Bytes random = Pattern(8192, 1);
  const Bytes zeros(4096, 0);
  Bytes text(65536);
  for (size_t i = 0; i < text.size(); ++i) text[i] = "record 0042 ok\n"[i % 15];
  ASSERT_TRUE(b.AddWrite(4096, random, false, true));  // incompressible: raw
  ASSERT_TRUE(b.AddWrite(1 << 20, text, true, true));  // compresses
  ASSERT_TRUE(b.AddWrite(512, zeros, false, false));   // raw on request
  ASSERT_TRUE(b.AddZero(2 << 20, 1 << 20, false, true));
  ASSERT_TRUE(b.AddZero(0, 512, true, false));
  ASSERT_TRUE(b.AddFlush());
  EXPECT_EQ(b.record_count(), 6u);
  EXPECT_GT(b.lz4_saved(), 60000u);

  Status s;
  auto recs = ParseAll(b.payload(), &s);
  ASSERT_TRUE(s.ok()) << s.ToString();
  ASSERT_EQ(recs.size(), 6u);
  EXPECT_EQ(recs[0].kind, DiskRecordKind::kWrite);
  EXPECT_EQ(recs[0].data, random);
  EXPECT_EQ(recs[1].kind, DiskRecordKind::kWrite);  // LZ4 on the wire, a write as applied
  EXPECT_EQ(recs[1].data, text);
  EXPECT_EQ(recs[1].flags, kDiskFlagFua);
  EXPECT_EQ(recs[2].data, zeros);
  EXPECT_EQ(recs[3].kind, DiskRecordKind::kZero);
  EXPECT_EQ(recs[3].length, 1u << 20);
  EXPECT_EQ(recs[4].flags, kDiskFlagTrim);
  EXPECT_EQ(recs[5].kind, DiskRecordKind::kFlush);
}

TEST(DiskRecords, DigestIgnoresTheTransferEncoding) {
  Bytes text(65536, 'a');
  DiskRecord raw{DiskRecordKind::kWrite, 0, 4096, text.size(), text};
  DiskFrameBuilder b;
  b.Reset(7);
  ASSERT_TRUE(b.AddWrite(4096, text, false, true));
  DiskFrameParser p;
  ASSERT_TRUE(p.Open(b.payload(), TwoDisks()).ok());
  DiskRecord got;
  ASSERT_TRUE(p.Next(&got));
  DiskRecordDigest a, c;
  a.Add(raw);
  c.Add(got);
  EXPECT_EQ(a.value(), c.value());
  // ...but not the content, the place, or the order.
  DiskRecordDigest moved, changed, reordered, once;
  DiskRecord m = raw;
  m.offset += 512;
  moved.Add(m);
  Bytes other = text;
  other[100] ^= 1;
  changed.Add({DiskRecordKind::kWrite, 0, 4096, other.size(), other});
  EXPECT_NE(moved.value(), a.value());
  EXPECT_NE(changed.value(), a.value());
  DiskRecord z{DiskRecordKind::kZero, 0, 0, 512, {}};
  once.Add(raw);
  once.Add(z);
  reordered.Add(z);
  reordered.Add(raw);
  EXPECT_NE(once.value(), reordered.value());
  EXPECT_EQ(once.records(), 2u);
  EXPECT_EQ(once.data_bytes(), text.size());
}

TEST(DiskRecords, BuilderIsAllOrNothing) {
  DiskFrameBuilder b(4096);
  b.Reset(9);
  const Bytes data = Pattern(2048, 2);
  ASSERT_TRUE(b.AddWrite(0, data, false, false));
  const size_t before = b.payload().size();
  EXPECT_FALSE(b.AddWrite(2048, data, false, false));  // does not fit: nothing added
  EXPECT_EQ(b.payload().size(), before);
  EXPECT_EQ(b.record_count(), 1u);
  EXPECT_FALSE(b.AddWrite(0, Bytes(kMaxDiskWriteChunk + 512), false, false));
  EXPECT_FALSE(b.AddZero(0, kMaxDiskZeroChunk + 512, false, false));
  EXPECT_FALSE(b.AddZero(0, 0, false, false));
}

// Every lie a frame can tell is refused whole.
TEST(DiskRecords, ParserRefusesBadFrames) {
  DiskFrameBuilder b;
  b.Reset(9);  // the 1 MiB disk
  const Bytes data = Pattern(4096, 3);
  ASSERT_TRUE(b.AddWrite(0, data, false, false));
  ASSERT_TRUE(b.AddZero(4096, 4096, false, false));
  const auto good_span = b.payload();
  const Bytes good(good_span.begin(), good_span.end());
  ASSERT_EQ(ParseAll(good).size(), 2u);
  const size_t r0 = kDiskFrameHeadSize, r1 = r0 + kDiskRecordHeadSize + 4096;

  auto refused = [&](auto mutate) {
    Bytes bad = good;
    mutate(bad);
    Status s;
    auto recs = ParseAll(bad, &s);
    return !s.ok() && recs.empty();
  };
  EXPECT_TRUE(refused([](Bytes& f) { StoreLE32(&f[0], 3); }));                 // unknown disk
  EXPECT_TRUE(refused([](Bytes& f) { StoreLE32(&f[4], 0); }));                 // no records
  EXPECT_TRUE(refused([](Bytes& f) { StoreLE32(&f[4], 3); }));                 // more than present
  EXPECT_TRUE(refused([](Bytes& f) { StoreLE32(&f[4], 1); }));                 // bytes after the records
  EXPECT_TRUE(refused([&](Bytes& f) { f[r0] = 4; }));                          // unknown kind
  EXPECT_TRUE(refused([&](Bytes& f) { f[r0 + 1] = kDiskFlagTrim; }));          // TRIM flag on a write
  EXPECT_TRUE(refused([&](Bytes& f) { f[r0 + 2] = 1; }));                      // reserved
  EXPECT_TRUE(refused([&](Bytes& f) { StoreLE32(&f[r0 + 16], 4095); }));       // data_len != length
  EXPECT_TRUE(refused([&](Bytes& f) { StoreLE64(&f[r0 + 8], 100); }));         // unaligned offset
  EXPECT_TRUE(refused([&](Bytes& f) { StoreLE64(&f[r1 + 8], 1 << 20); }));     // beyond the end
  EXPECT_TRUE(refused([&](Bytes& f) { StoreLE64(&f[r1 + 8], UINT64_MAX - 511); }));  // overflow
  EXPECT_TRUE(refused([&](Bytes& f) { StoreLE32(&f[r1 + 4], 0); }));           // empty zero range
  EXPECT_TRUE(refused([&](Bytes& f) { StoreLE32(&f[r1 + 16], 8); }));          // zero with data
  EXPECT_TRUE(refused([&](Bytes& f) { f.resize(f.size() - 1); }));             // truncated
  EXPECT_TRUE(refused([&](Bytes& f) {                                          // oversize write
    StoreLE32(&f[r0 + 4], kMaxDiskWriteChunk + 512);
    StoreLE32(&f[r0 + 16], kMaxDiskWriteChunk + 512);
  }));
  EXPECT_TRUE(refused([&](Bytes& f) { f[r0] = static_cast<uint8_t>(DiskRecordKind::kFlush); }));
}

TEST(DiskRecords, ParserRefusesLyingLz4) {
  DiskFrameBuilder b;
  b.Reset(7);
  const Bytes text(65536, 'x');
  ASSERT_TRUE(b.AddWrite(0, text, false, true));
  const auto sp = b.payload();
  const Bytes good(sp.begin(), sp.end());
  const size_t r0 = kDiskFrameHeadSize;
  ASSERT_EQ(good[r0], static_cast<uint8_t>(DiskRecordKind::kWriteLz4));
  Bytes bad = good;
  StoreLE32(&bad[r0 + 4], 65536 + 512);  // claims more than it decompresses to
  Status s;
  EXPECT_TRUE(ParseAll(bad, &s).empty());
  EXPECT_FALSE(s.ok());
  bad = good;
  bad[r0 + kDiskRecordHeadSize] ^= 0xFF;  // garbage stream
  bad[r0 + kDiskRecordHeadSize + 1] ^= 0xFF;
  auto recs = ParseAll(bad, &s);
  // Either refused, or (if the damaged stream still decodes to the same
  // length) exactly one record: never more, never a read outside the frame.
  EXPECT_LE(recs.size(), 1u);
}

TEST(DiskRecords, DiskEndRoundTrip) {
  DiskEnd e{7, 12, 4096 * 3, 0x1234567890abcdefULL};
  Bytes buf;
  ASSERT_TRUE(e.EncodeTo(&buf).ok());
  ASSERT_EQ(buf.size(), kDiskEndSize);
  auto d = DiskEnd::Decode(buf);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->disk_id, 7u);
  EXPECT_EQ(d->record_count, 12u);
  EXPECT_EQ(d->digest, e.digest);
  buf[5] = 1;
  EXPECT_FALSE(DiskEnd::Decode(buf).ok());
  buf.pop_back();
  EXPECT_FALSE(DiskEnd::Decode(buf).ok());
  EXPECT_EQ(MaxPayloadFor(static_cast<uint8_t>(FrameType::kDiskEnd)), kDiskEndSize);
  EXPECT_EQ(FrameTypeName(0x16), "DISK");
}

}  // namespace
}  // namespace romulus::protocol
