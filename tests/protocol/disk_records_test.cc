// The disk part of an epoch on the wire (docs/PROTOCOL.md §3.10): the HELLO
// disk list, DISK frames built and parsed (raw and LZ4 writes, zero ranges,
// flushes), the record digest, DISK_END, and every way a frame can lie about
// its records: refused whole, nothing yielded.
#include "protocol/disk_records.h"

#include <gtest/gtest.h>

#include <algorithm>
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

TEST(DiskRecords, LineagesAndHeldDisksTravelOnlyWithKCapDiskDelta) {
  Hello h;
  h.identity = "g";
  h.capabilities = kCapDisk | kCapDiskDelta;
  h.disks = TwoDisks();
  h.disk_lineages = {0xAAAA, 0xBBBB};
  Bytes buf;
  ASSERT_TRUE(h.EncodeTo(&buf).ok());
  auto d = Hello::Decode(buf);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->disk_lineages, h.disk_lineages);
  // Truncated lineages, a zero lineage, one lineage too few: refused.
  Bytes cut(buf.begin(), buf.end() - 4);
  EXPECT_FALSE(Hello::Decode(cut).ok());
  Bytes zero = buf;
  std::fill(zero.end() - 8, zero.end(), 0);
  EXPECT_FALSE(Hello::Decode(zero).ok());
  h.disk_lineages = {0xAAAA};
  EXPECT_FALSE(h.EncodeTo(&buf).ok());
  h.capabilities = kCapDisk;
  h.disk_lineages = {0xAAAA, 0xBBBB};
  EXPECT_FALSE(h.EncodeTo(&buf).ok()) << "lineages without the capability";
  // The largest HELLO with lineages (and the Xen release) still fits its
  // frame bound.
  Hello big = h;
  big.capabilities = kCapDisk | kCapDiskDelta | kCapXenRelease;
  big.xen_release = XenRelease(4, 20);
  big.identity.assign(kMaxIdentity, 'i');
  big.disks.clear();
  big.disk_lineages.clear();
  for (uint32_t i = 0; i < kMaxDisks; ++i) {
    big.disks.push_back({i, 512, std::string(kMaxDiskName, 'd')});
    big.disk_lineages.push_back(i + 1);
  }
  ASSERT_TRUE(big.EncodeTo(&buf).ok());
  EXPECT_LE(buf.size(), MaxPayloadFor(static_cast<uint8_t>(FrameType::kHello)));
  EXPECT_TRUE(Hello::Decode(buf).ok());

  HelloAck a;
  a.accepted = true;
  a.capabilities = kCapDisk | kCapDiskDelta | kCapCacheResize;
  a.max_cache_pages = 77;
  a.disks_held = {{1, 0xAAAA, 40}, {2, 0xBBBB, 41}};
  ASSERT_TRUE(a.EncodeTo(&buf).ok());
  auto ad = HelloAck::Decode(buf);
  ASSERT_TRUE(ad.ok()) << ad.status().ToString();
  EXPECT_EQ(ad->max_cache_pages, 77u);
  EXPECT_EQ(ad->disks_held, a.disks_held);
  Bytes acut(buf.begin(), buf.end() - 1);
  EXPECT_FALSE(HelloAck::Decode(acut).ok());
  a.disks_held = {{1, 0xAAAA, 40}, {1, 0xBBBB, 41}};
  EXPECT_FALSE(a.EncodeTo(&buf).ok()) << "an id twice";
  a.disks_held = {{1, 0, 40}};
  EXPECT_FALSE(a.EncodeTo(&buf).ok()) << "lineage 0";
  // An empty list is a valid answer (the backup holds nothing it can name).
  a.disks_held.clear();
  ASSERT_TRUE(a.EncodeTo(&buf).ok());
  ad = HelloAck::Decode(buf);
  ASSERT_TRUE(ad.ok());
  EXPECT_TRUE(ad->disks_held.empty());
  a.capabilities = kCapDisk;
  a.disks_held = {{1, 0xAAAA, 40}};
  EXPECT_FALSE(a.EncodeTo(&buf).ok()) << "held disks without the capability";
}

// kCapDiskFloor (PROTOCOL.md §3.1): one change floor per disk after the
// Xen release, only with the capability, which needs kCapDiskDelta; a HELLO
// that would exceed its frame bound is refused at encoding (the primary then
// drops the floors).
TEST(DiskRecords, ChangeFloorsTravelOnlyWithKCapDiskFloor) {
  Hello h;
  h.identity = "g";
  h.capabilities = kCapDisk | kCapDiskDelta | kCapXenRelease | kCapDiskFloor;
  h.disks = TwoDisks();
  h.disk_lineages = {0xAAAA, 0xBBBB};
  h.xen_release = XenRelease(4, 17);
  h.disk_change_floors = {0, 41};
  Bytes buf;
  ASSERT_TRUE(h.EncodeTo(&buf).ok());
  EXPECT_EQ(buf.size(), h.EncodedSize());
  auto d = Hello::Decode(buf);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->disk_change_floors, h.disk_change_floors);
  EXPECT_EQ(d->xen_release, h.xen_release) << "the floors come after the release";
  // Truncated floors: refused.
  Bytes cut(buf.begin(), buf.end() - 1);
  EXPECT_FALSE(Hello::Decode(cut).ok());
  // The capability without lineages, on the wire and at encoding.
  Bytes no_delta = buf;
  StoreLE64(&no_delta[16], LoadLE64(&no_delta[16]) & ~kCapDiskDelta);
  EXPECT_FALSE(Hello::Decode(no_delta).ok());
  Hello bad = h;
  bad.disk_change_floors = {0};
  EXPECT_FALSE(bad.EncodeTo(&buf).ok()) << "one floor too few";
  bad = h;
  bad.capabilities &= ~kCapDiskFloor;
  EXPECT_FALSE(bad.EncodeTo(&buf).ok()) << "floors without the capability";
  bad = h;
  bad.capabilities &= ~kCapDiskDelta;
  bad.disk_lineages.clear();
  EXPECT_FALSE(bad.EncodeTo(&buf).ok()) << "floors without lineages";
  // An older receiver stops after the release: the floors are trailing
  // bytes it ignores (the same HELLO without the capability bit decodes).
  Bytes old;
  ASSERT_TRUE(h.EncodeTo(&old).ok());
  StoreLE64(&old[16], LoadLE64(&old[16]) & ~kCapDiskFloor);
  auto od = Hello::Decode(old);
  ASSERT_TRUE(od.ok()) << od.status().ToString();
  EXPECT_TRUE(od->disk_change_floors.empty());
  // The largest HELLO has no room for floors: refused at encoding, not sent
  // oversized; EncodedSize says so beforehand.
  Hello big = h;
  big.identity.assign(kMaxIdentity, 'i');
  big.disks.clear();
  big.disk_lineages.clear();
  big.disk_change_floors.clear();
  for (uint32_t i = 0; i < kMaxDisks; ++i) {
    big.disks.push_back({i, 512, std::string(kMaxDiskName, 'd')});
    big.disk_lineages.push_back(i + 1);
    big.disk_change_floors.push_back(i);
  }
  EXPECT_GT(big.EncodedSize(), MaxPayloadFor(static_cast<uint8_t>(FrameType::kHello)));
  Status st = big.EncodeTo(&buf);
  EXPECT_EQ(st.code(), Code::kInvalidArgument) << st.ToString();
  EXPECT_NE(st.message().find("exceeds its bound"), std::string::npos) << st.ToString();
  big.capabilities &= ~kCapDiskFloor;
  big.disk_change_floors.clear();
  EXPECT_TRUE(big.EncodeTo(&buf).ok()) << "the same HELLO without floors fits";
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

// Text-like bytes that LZ4 shrinks about 2:1 (below kDiskArenaMaxRatio):
// "block id: " and six random hex digits, over and over.
Bytes Compressible(size_t n, uint32_t seed) {
  Bytes b(n);
  std::mt19937 rng(seed);
  for (size_t i = 0; i < n; ++i) b[i] = i % 16 < 10 ? "block id: "[i % 16] : "0123456789abcdef"[rng() % 16];
  return b;
}

// A frame whose LZ4 record after a valid one (and after a raw write) does not
// decompress is refused whole: nothing is yielded, neither from it nor from
// the frame the parser read before.
TEST(DiskRecords, CorruptLz4AfterAValidOneYieldsNothing) {
  const Bytes first = Compressible(65536, 1), second = Compressible(65536, 2);
  const Bytes raw = Pattern(4096, 3);
  DiskFrameBuilder b;
  b.Reset(7);
  ASSERT_TRUE(b.AddWrite(0, first, false, true));
  ASSERT_TRUE(b.AddWrite(1 << 20, raw, false, true));
  ASSERT_TRUE(b.AddWrite(2 << 20, second, false, true));
  ASSERT_TRUE(b.AddFlush());
  const auto sp = b.payload();
  const Bytes good(sp.begin(), sp.end());
  const size_t r0 = kDiskFrameHeadSize;
  ASSERT_EQ(good[r0], static_cast<uint8_t>(DiskRecordKind::kWriteLz4));
  const size_t r1 = r0 + kDiskRecordHeadSize + LoadLE32(&good[r0 + 16]);
  ASSERT_EQ(good[r1], static_cast<uint8_t>(DiskRecordKind::kWrite));
  const size_t r2 = r1 + kDiskRecordHeadSize + raw.size();
  ASSERT_EQ(good[r2], static_cast<uint8_t>(DiskRecordKind::kWriteLz4));
  const uint32_t r2_len = LoadLE32(&good[r2 + 16]);

  auto check = [&](const char* what, auto mutate) {
    SCOPED_TRACE(what);
    Bytes bad = good;
    mutate(bad);
    DiskFrameParser p;
    // The parser first reads a good frame, partly: its records must not leak
    // into what the refused frame yields.
    ASSERT_TRUE(p.Open(good, TwoDisks()).ok());
    DiskRecord r;
    ASSERT_TRUE(p.Next(&r));
    Status s = p.Open(bad, TwoDisks());
    EXPECT_EQ(s.code(), Code::kCorruption) << s.ToString();
    EXPECT_NE(s.message().find("DISK record 2 "), std::string::npos) << s.ToString();
    EXPECT_FALSE(p.Next(&r));
    EXPECT_EQ(p.record_count(), 0u);
    // And the parser is still good for the next frame.
    ASSERT_TRUE(p.Open(good, TwoDisks()).ok());
    uint32_t n = 0;
    while (p.Next(&r)) ++n;
    EXPECT_EQ(n, 4u);
  };
  check("garbage stream", [&](Bytes& f) {
    for (size_t i = 0; i < r2_len; ++i) f[r2 + kDiskRecordHeadSize + i] = 0xFF;  // literal run beyond the input
  });
  check("claims more than it decompresses to", [&](Bytes& f) { StoreLE32(&f[r2 + 4], 65536 + 512); });
  check("claims less than it decompresses to", [&](Bytes& f) { StoreLE32(&f[r2 + 4], 65536 - 512); });
  // Sanity: the good frame yields both compressed writes intact.
  auto recs = ParseAll(good);
  ASSERT_EQ(recs.size(), 4u);
  EXPECT_EQ(recs[0].data, first);
  EXPECT_EQ(recs[1].data, raw);
  EXPECT_EQ(recs[2].data, second);
}

// LZ4 records are decompressed once, at validation, into an arena that is
// reused: no allocation after the first frame, and nothing decompressed
// twice while the frame fits the arena's bound.
TEST(DiskRecords, Lz4IsDecodedOnceIntoAReusedArena) {
  DiskFrameParser p;
  DiskFrameBuilder b(size_t{2} << 20);
  std::vector<Bytes> frames;
  std::vector<std::vector<Bytes>> writes;
  for (uint32_t f = 0; f < 6; ++f) {
    b.Reset(7);
    writes.emplace_back();
    for (uint32_t i = 0; i < 20; ++i) {
      writes.back().push_back(Compressible(65536, f * 100 + i));
      ASSERT_TRUE(b.AddWrite(uint64_t{i} << 16, writes.back().back(), false, true));
    }
    const auto sp = b.payload();
    frames.emplace_back(sp.begin(), sp.end());
  }
  uint64_t allocations_after_first = 0;
  for (size_t f = 0; f < frames.size(); ++f) {
    ASSERT_TRUE(p.Open(frames[f], TwoDisks()).ok());
    if (f == 0) allocations_after_first = p.stats().allocations;
    DiskRecord r;
    size_t i = 0;
    while (p.Next(&r)) {
      ASSERT_LT(i, writes[f].size());
      EXPECT_TRUE(std::equal(r.data.begin(), r.data.end(), writes[f][i].begin(), writes[f][i].end())) << f << "/" << i;
      ++i;
    }
    EXPECT_EQ(i, writes[f].size());
  }
  EXPECT_EQ(allocations_after_first, 1u) << "one arena for the first frame";
  EXPECT_EQ(p.stats().allocations, allocations_after_first) << "no allocation in steady state";
  EXPECT_EQ(p.stats().lz4_records, 6u * 20u);
  EXPECT_EQ(p.stats().lz4_redecoded, 0u);
  EXPECT_LE(p.arena_capacity(), size_t{2} << 20);  // 20 x 64 KiB, rounded to a power of two

  // Zero blocks compress ~250:1: cheaper to decompress again than to keep
  // (kDiskArenaMaxRatio), so they go through the scratch buffer instead.
  b.Reset(7);
  const Bytes zeros(65536, 0), text = Compressible(65536, 9);
  ASSERT_TRUE(b.AddWrite(0, zeros, false, true));
  ASSERT_TRUE(b.AddWrite(65536, text, false, true));
  ASSERT_TRUE(b.AddWrite(131072, zeros, false, true));
  auto recs = ParseAll(b.payload());
  ASSERT_EQ(recs.size(), 3u);
  EXPECT_EQ(recs[0].data, zeros);
  EXPECT_EQ(recs[1].data, text);
  EXPECT_EQ(recs[2].data, zeros);
  const uint64_t before = p.stats().lz4_redecoded;
  ASSERT_TRUE(p.Open(b.payload(), TwoDisks()).ok());
  DiskRecord r;
  while (p.Next(&r)) {
  }
  EXPECT_EQ(p.stats().lz4_redecoded, before + 2);
}

// A frame that expands beyond the arena's bound: the records that fit come
// from the arena, the rest are decompressed again when yielded; the bytes
// are the same either way, and the data stays within the bound.
TEST(DiskRecords, BeyondTheArenaBoundRecordsAreDecodedAgain) {
  DiskFrameBuilder b;
  b.Reset(7);
  std::vector<Bytes> writes;
  for (uint32_t i = 0; i < 8; ++i) {
    writes.push_back(Compressible(65536, i));
    ASSERT_TRUE(b.AddWrite(uint64_t{i} << 16, writes.back(), i % 2 == 1, true));
  }
  ASSERT_TRUE(b.AddZero(1 << 20, 4096, false, false));
  const auto sp = b.payload();
  const Bytes frame(sp.begin(), sp.end());

  DiskFrameParser small(kMaxDiskWriteChunk);  // the least bound: 1 MiB, 16 of these writes
  DiskFrameParser tiny(0);                    // raised to kMaxDiskWriteChunk as well
  DiskFrameParser big;
  for (auto* p : {&small, &tiny, &big}) {
    ASSERT_TRUE(p->Open(frame, TwoDisks()).ok());
    DiskRecord r;
    size_t i = 0;
    while (p->Next(&r) && i < writes.size()) {
      EXPECT_EQ(r.kind, DiskRecordKind::kWrite);
      EXPECT_EQ(r.fua(), i % 2 == 1);
      EXPECT_TRUE(std::equal(r.data.begin(), r.data.end(), writes[i].begin(), writes[i].end())) << i;
      ++i;
    }
    EXPECT_EQ(i, writes.size());
    EXPECT_EQ(r.kind, DiskRecordKind::kZero);
    EXPECT_EQ(p->stats().lz4_redecoded, 0u) << "8 x 64 KiB fit in 1 MiB";
  }

  // 24 writes of 64 KiB = 1.5 MiB: the first 16 fit in a 1 MiB arena.
  b.Reset(7);
  writes.clear();
  for (uint32_t i = 0; i < 24; ++i) {
    writes.push_back(Compressible(65536, 50 + i));
    ASSERT_TRUE(b.AddWrite(uint64_t{i} << 16, writes.back(), false, true));
  }
  const auto sp2 = b.payload();
  const Bytes large(sp2.begin(), sp2.end());
  uint64_t allocations = 0;
  for (int round = 0; round < 3; ++round) {
    ASSERT_TRUE(small.Open(large, TwoDisks()).ok());
    if (round == 0) allocations = small.stats().allocations;
    DiskRecord r;
    size_t i = 0;
    while (small.Next(&r)) {
      ASSERT_LT(i, writes.size());
      EXPECT_TRUE(std::equal(r.data.begin(), r.data.end(), writes[i].begin(), writes[i].end())) << i;
      ++i;
    }
    EXPECT_EQ(i, writes.size());
  }
  EXPECT_EQ(small.arena_capacity(), size_t{kMaxDiskWriteChunk});
  EXPECT_EQ(small.stats().lz4_redecoded, 3u * 8u);
  // 512 KiB for the first frame, 1 MiB for this one, and the scratch buffer.
  EXPECT_EQ(allocations, 3u);
  EXPECT_EQ(small.stats().allocations, allocations) << "no allocation in steady state";
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
  EXPECT_EQ(d->sync_state, 0u);
  EXPECT_TRUE(d->whole());
  buf[5] = 1;
  EXPECT_FALSE(DiskEnd::Decode(buf).ok()) << "the sync word without kCapDiskSync";
  // With kCapDiskSync the word is the sync state, 0..1001.
  e.sync_state = 1 + 370;
  ASSERT_TRUE(e.EncodeTo(&buf).ok());
  d = DiskEnd::Decode(buf, /*sync_agreed=*/true);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->sync_state, 371u);
  EXPECT_FALSE(d->whole());
  EXPECT_FALSE(DiskEnd::Decode(buf).ok());
  e.sync_state = DiskEnd::kMaxSyncState + 1;
  EXPECT_FALSE(e.EncodeTo(&buf).ok());
  e.sync_state = DiskEnd::kMaxSyncState;
  ASSERT_TRUE(e.EncodeTo(&buf).ok());
  buf[4] = 0xEA;  // 1002 = 0x3EA
  EXPECT_FALSE(DiskEnd::Decode(buf, true).ok());
  buf.pop_back();
  EXPECT_FALSE(DiskEnd::Decode(buf).ok());
  EXPECT_EQ(MaxPayloadFor(static_cast<uint8_t>(FrameType::kDiskEnd)), kDiskEndTaggedSize);
  EXPECT_EQ(FrameTypeName(0x16), "DISK");
}

TEST(DiskRecords, DiskEndCarriesTheTagOnlyWithKCapDiskDelta) {
  DiskEnd e{3, 1, 4096, 99};
  e.has_tag = true;
  e.tag = 0x0102030405060708ULL;
  Bytes buf;
  ASSERT_TRUE(e.EncodeTo(&buf).ok());
  ASSERT_EQ(buf.size(), kDiskEndTaggedSize);
  auto d = DiskEnd::Decode(buf, false, /*delta_agreed=*/true);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_TRUE(d->has_tag);
  EXPECT_EQ(d->tag, e.tag);
  EXPECT_EQ(d->digest, 99u);
  // A tagged DISK_END where none was agreed, or an untagged one where it
  // was: the size is wrong, nothing is guessed.
  EXPECT_FALSE(DiskEnd::Decode(buf).ok());
  e.has_tag = false;
  ASSERT_TRUE(e.EncodeTo(&buf).ok());
  EXPECT_FALSE(DiskEnd::Decode(buf, false, true).ok());
}

}  // namespace
}  // namespace romulus::protocol
