// The tap protocol's encoding (disk/tap_wire.h, docs/DISK.md §8a): every
// message round-trips, and every malformed header or payload is refused
// with a clear status before anything is read or allocated for it. The
// expected bytes are written by hand, not by the encoder under test.
#include "disk/tap_wire.h"

#include <gtest/gtest.h>

#include <vector>

namespace romulus::disk::tap {
namespace {

std::vector<uint8_t> Le(std::initializer_list<std::pair<uint64_t, int>> fields) {
  std::vector<uint8_t> v;
  for (auto [x, n] : fields) {
    for (int i = 0; i < n; ++i) v.push_back(static_cast<uint8_t>(i < 8 ? x >> (8 * i) : 0));  // wider fields: zero-extended
  }
  return v;
}

Result<Header> Decode(const std::vector<uint8_t>& b) {
  EXPECT_EQ(b.size(), kHeaderSize);
  return DecodeHeader(std::span<const uint8_t, kHeaderSize>(b.data(), kHeaderSize));
}

TEST(TapWire, HeaderLayoutIsTheDocumentedOne) {
  uint8_t h[kHeaderSize];
  EncodeHeader(h, MsgType::kSeal, 16);
  const auto want = Le({{0x50415452, 4}, {1, 2}, {4, 2}, {16, 4}, {0, 4}});
  EXPECT_EQ(std::vector<uint8_t>(h, h + kHeaderSize), want);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(h), 4), "RTAP");
  auto d = Decode(want);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->type, MsgType::kSeal);
  EXPECT_EQ(d->length, 16u);
}

TEST(TapWire, HeaderRefusals) {
  // Bad magic.
  auto st = Decode(Le({{0x50415453, 4}, {1, 2}, {2, 2}, {8, 4}, {0, 4}}));
  EXPECT_EQ(st.status().code(), Code::kCorruption);
  EXPECT_NE(st.status().message().find("not a tap message"), std::string::npos);
  // Another version.
  st = Decode(Le({{0x50415452, 4}, {2, 2}, {2, 2}, {8, 4}, {0, 4}}));
  EXPECT_EQ(st.status().code(), Code::kCorruption);
  EXPECT_NE(st.status().message().find("version 2"), std::string::npos);
  // Reserved bytes.
  st = Decode(Le({{0x50415452, 4}, {1, 2}, {2, 2}, {8, 4}, {1, 4}}));
  EXPECT_EQ(st.status().code(), Code::kCorruption);
  // Unknown types, 0 and 12 (10 and 11 are FLOOR? and FLOOR).
  for (uint64_t type : {0, 12, 0xffff}) {
    st = Decode(Le({{0x50415452, 4}, {1, 2}, {type, 2}, {8, 4}, {0, 4}}));
    EXPECT_EQ(st.status().code(), Code::kCorruption) << type;
    EXPECT_NE(st.status().message().find("unknown tap message type"), std::string::npos);
  }
  // Lengths outside the type's bounds: oversize (a hostile 4 GiB), undersize.
  st = Decode(Le({{0x50415452, 4}, {1, 2}, {5, 2}, {0xffffffff, 4}, {0, 4}}));
  EXPECT_EQ(st.status().code(), Code::kOutOfRange);
  st = Decode(Le({{0x50415452, 4}, {1, 2}, {5, 2}, {(8u << 20) + 1, 4}, {0, 4}}));
  EXPECT_EQ(st.status().code(), Code::kOutOfRange);
  EXPECT_TRUE(Decode(Le({{0x50415452, 4}, {1, 2}, {5, 2}, {8u << 20, 4}, {0, 4}})).ok());
  st = Decode(Le({{0x50415452, 4}, {1, 2}, {2, 2}, {25, 4}, {0, 4}}));  // PAUSE is 8 or 24
  EXPECT_EQ(st.status().code(), Code::kOutOfRange);
  st = Decode(Le({{0x50415452, 4}, {1, 2}, {2, 2}, {7, 4}, {0, 4}}));
  EXPECT_EQ(st.status().code(), Code::kOutOfRange);
  st = Decode(Le({{0x50415452, 4}, {1, 2}, {1, 2}, {40, 4}, {0, 4}}));  // HELLO without a name
  EXPECT_EQ(st.status().code(), Code::kOutOfRange);
  st = Decode(Le({{0x50415452, 4}, {1, 2}, {7, 2}, {4 + 1025, 4}, {0, 4}}));  // ERROR text too long
  EXPECT_EQ(st.status().code(), Code::kOutOfRange);
}

TEST(TapWire, HelloRoundTripAndRefusals) {
  Hello h{0x1122334455667788ull, 4u << 20, 64u << 20, 7, kFeatureStream, "xvda-1.root_2"};
  uint8_t buf[kHelloFixed + kMaxName];
  size_t n = EncodeHello(h, buf);
  ASSERT_EQ(n, kHelloFixed + h.name.size());
  auto want = Le({{h.instance_id, 8}, {h.disk_size, 8}, {h.log_budget, 8}, {7, 8}, {13, 2}, {1, 1}, {0, 1}, {0, 4}});
  want.insert(want.end(), h.name.begin(), h.name.end());
  EXPECT_EQ(std::vector<uint8_t>(buf, buf + n), want);
  auto d = DecodeHello(want);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->instance_id, h.instance_id);
  EXPECT_EQ(d->disk_size, h.disk_size);
  EXPECT_EQ(d->log_budget, h.log_budget);
  EXPECT_EQ(d->next_tag, 7u);
  EXPECT_EQ(d->name, h.name);
  EXPECT_EQ(d->features, kFeatureStream);

  auto bad = want;
  bad[35] = 1;  // reserved, after the features byte
  EXPECT_EQ(DecodeHello(bad).status().code(), Code::kCorruption);
  bad = want;
  bad.pop_back();  // truncated name
  EXPECT_EQ(DecodeHello(bad).status().code(), Code::kCorruption);
  bad = want;
  bad.push_back('x');  // trailing byte
  EXPECT_EQ(DecodeHello(bad).status().code(), Code::kCorruption);
  bad = want;
  bad[kHelloFixed] = '/';  // not a clean name
  EXPECT_EQ(DecodeHello(bad).status().code(), Code::kCorruption);
  bad = want;
  bad[8] = 1;  // size 4 MiB + 1: not a sector multiple
  EXPECT_EQ(DecodeHello(bad).status().code(), Code::kCorruption);
  bad = want;
  bad[35] = 1;  // reserved
  EXPECT_EQ(DecodeHello(bad).status().code(), Code::kCorruption);
  bad = want;
  std::fill(bad.begin() + 24, bad.begin() + 32, 0);  // next tag 0
  EXPECT_EQ(DecodeHello(bad).status().code(), Code::kCorruption);
  EXPECT_EQ(DecodeHello(std::vector<uint8_t>(10)).status().code(), Code::kCorruption);
}

TEST(TapWire, CleanNames) {
  EXPECT_TRUE(IsCleanName("xvda"));
  EXPECT_TRUE(IsCleanName(std::string(64, 'a')));
  EXPECT_FALSE(IsCleanName(std::string(65, 'a')));
  EXPECT_FALSE(IsCleanName(""));
  EXPECT_FALSE(IsCleanName("a b"));
  EXPECT_FALSE(IsCleanName("a/b"));
  EXPECT_FALSE(IsCleanName("a\nb"));
  EXPECT_FALSE(IsCleanName("\xc3\xa9"));
}

TEST(TapWire, PausePausedSealSealed) {
  uint8_t pb[kPauseChangedSize];
  ASSERT_EQ(EncodePause(pb, Pause{true}), kPauseSize);
  std::span<const uint8_t> p(pb, kPauseSize);
  EXPECT_EQ(std::vector<uint8_t>(p.begin(), p.end()), Le({{1, 1}, {0, 7}}));
  ASSERT_TRUE(DecodePause(p).ok());
  EXPECT_TRUE(DecodePause(p)->full_copy);
  EXPECT_FALSE(DecodePause(Le({{0, 8}}))->full_copy);
  ASSERT_EQ(EncodePause(pb, Pause{false, true}), kPauseSize);
  EXPECT_EQ(std::vector<uint8_t>(p.begin(), p.end()), Le({{2, 1}, {0, 7}}));
  ASSERT_TRUE(DecodePause(p).ok());
  EXPECT_TRUE(DecodePause(p)->stream);
  EXPECT_FALSE(DecodePause(p)->full_copy);
  // Mode 3: the copy of what changed since a tag, 16 bytes.
  ASSERT_EQ(EncodePause(pb, Pause{false, false, true, 0x1234, 0x99}), kPauseChangedSize);
  EXPECT_EQ(std::vector<uint8_t>(pb, pb + kPauseChangedSize), Le({{3, 1}, {0, 7}, {0x1234, 8}, {0x99, 8}}));
  auto ch = DecodePause(std::span<const uint8_t>(pb, kPauseChangedSize));
  ASSERT_TRUE(ch.ok());
  EXPECT_TRUE(ch->changed);
  EXPECT_EQ(ch->since, 0x1234u);
  EXPECT_EQ(ch->lineage, 0x99u);
  EXPECT_EQ(DecodePause(Le({{3, 1}, {0, 7}})).status().code(), Code::kCorruption) << "mode 3 without since";
  EXPECT_EQ(DecodePause(Le({{3, 1}, {0, 7}, {5, 8}})).status().code(), Code::kCorruption) << "mode 3 without lineage";
  EXPECT_EQ(DecodePause(Le({{1, 1}, {0, 7}, {5, 8}, {5, 8}})).status().code(), Code::kCorruption) << "since on mode 1";
  EXPECT_EQ(DecodePause(Le({{4, 1}, {0, 7}})).status().code(), Code::kCorruption);
  EXPECT_EQ(DecodePause(Le({{1, 1}, {1, 7}})).status().code(), Code::kCorruption);
  EXPECT_EQ(DecodePause(Le({{1, 1}, {0, 6}})).status().code(), Code::kCorruption);  // truncated

  uint8_t q[kPausedChangedSize];
  ASSERT_EQ(EncodePaused(q, Paused{42}), kPausedSize);
  EXPECT_EQ(DecodePaused(std::span<const uint8_t>(q, kPausedSize))->tag, 42u);
  EXPECT_FALSE(DecodePaused(std::span<const uint8_t>(q, kPausedSize))->with_regions);
  ASSERT_EQ(EncodePaused(q, Paused{42, true, 7}), kPausedChangedSize);
  auto pr = DecodePaused(q);
  ASSERT_TRUE(pr.ok());
  EXPECT_TRUE(pr->with_regions);
  EXPECT_EQ(pr->regions, 7u);
  EXPECT_EQ(DecodePaused(Le({{1, 8}, {0, 4}})).status().code(), Code::kCorruption);  // 12 bytes
  uint8_t a[kAckedSize];
  EncodeAcked(a, 77);
  EXPECT_EQ(*DecodeAcked(a), 77u);
  EXPECT_EQ(DecodeAcked(Le({{0, 8}})).status().code(), Code::kCorruption);
  EXPECT_EQ(DecodeAcked(Le({{1, 4}})).status().code(), Code::kCorruption);
  // FLOOR? has no payload; FLOOR exactly 8 bytes (0: nothing forgotten).
  uint8_t fl[kFloorSize];
  EncodeFloor(fl, 41);
  EXPECT_EQ(*DecodeFloor(fl), 41u);
  EncodeFloor(fl, 0);
  EXPECT_EQ(*DecodeFloor(fl), 0u);
  EXPECT_EQ(DecodeFloor(Le({{1, 4}})).status().code(), Code::kCorruption);
  uint8_t fh[kHeaderSize];
  EncodeHeader(fh, MsgType::kFloorQuery, 0);
  EXPECT_EQ(DecodeHeader(fh)->type, MsgType::kFloorQuery);
  EncodeHeader(fh, MsgType::kFloorQuery, 1);
  EXPECT_EQ(DecodeHeader(fh).status().code(), Code::kOutOfRange) << "FLOOR? with a payload";
  EncodeHeader(fh, MsgType::kFloor, 16);
  EXPECT_EQ(DecodeHeader(fh).status().code(), Code::kOutOfRange);
  EncodeHeader(fh, static_cast<MsgType>(12), 0);
  EXPECT_EQ(DecodeHeader(fh).status().code(), Code::kCorruption) << "an unknown type with no payload";
  EXPECT_EQ(DecodePaused(Le({{0, 8}})).status().code(), Code::kCorruption);
  EXPECT_EQ(DecodePaused(Le({{1, 4}})).status().code(), Code::kCorruption);

  uint8_t s[kSealSize];
  EncodeSeal(s, Seal{9, 1500});
  EXPECT_EQ(std::vector<uint8_t>(s, s + kSealSize), Le({{9, 8}, {1500, 4}, {0, 4}}));
  auto sd = DecodeSeal(s);
  ASSERT_TRUE(sd.ok());
  EXPECT_EQ(sd->tag, 9u);
  EXPECT_EQ(sd->timeout_ms, 1500u);
  EXPECT_EQ(DecodeSeal(Le({{9, 8}, {0, 4}, {0, 4}})).status().code(), Code::kOutOfRange);
  EXPECT_EQ(DecodeSeal(Le({{9, 8}, {kMaxSealTimeoutMs + 1, 4}, {0, 4}})).status().code(), Code::kOutOfRange);
  EXPECT_EQ(DecodeSeal(Le({{0, 8}, {10, 4}, {0, 4}})).status().code(), Code::kCorruption);
  EXPECT_EQ(DecodeSeal(Le({{9, 8}, {10, 4}, {1, 4}})).status().code(), Code::kCorruption);
  EXPECT_EQ(DecodeSeal(Le({{9, 8}, {10, 4}})).status().code(), Code::kCorruption);

  uint8_t e[kSealedSyncSize];
  EXPECT_EQ(EncodeSealed(e, Sealed{3, 4, 5, 6}), kSealedSize);
  EXPECT_EQ(std::vector<uint8_t>(e, e + kSealedSize), Le({{3, 8}, {4, 8}, {5, 8}, {6, 8}}));
  auto ed = DecodeSealed(std::span<const uint8_t>(e, kSealedSize));
  ASSERT_TRUE(ed.ok());
  EXPECT_EQ(ed->record_count, 4u);
  EXPECT_EQ(ed->data_bytes, 5u);
  EXPECT_EQ(ed->digest, 6u);
  EXPECT_FALSE(ed->with_sync);
  EXPECT_EQ(DecodeSealed(Le({{3, 8}, {4, 8}, {5, 8}})).status().code(), Code::kCorruption);
  // A streaming attachment's SEALED carries the sync state.
  Sealed with{3, 4, 5, 6, true, 1 + 375};
  EXPECT_EQ(EncodeSealed(e, with), kSealedSyncSize);
  EXPECT_EQ(std::vector<uint8_t>(e, e + kSealedSyncSize), Le({{3, 8}, {4, 8}, {5, 8}, {6, 8}, {376, 4}, {0, 4}}));
  auto ws = DecodeSealed(e);
  ASSERT_TRUE(ws.ok());
  EXPECT_TRUE(ws->with_sync);
  EXPECT_EQ(ws->sync_state, 376u);
  EXPECT_EQ(DecodeSealed(Le({{3, 8}, {4, 8}, {5, 8}, {6, 8}, {1002, 4}, {0, 4}})).status().code(), Code::kCorruption);
  EXPECT_EQ(DecodeSealed(Le({{3, 8}, {4, 8}, {5, 8}, {6, 8}, {1, 4}, {1, 4}})).status().code(), Code::kCorruption);
  EXPECT_EQ(DecodeSealed(Le({{3, 8}, {4, 8}, {5, 8}, {6, 8}, {1, 4}})).status().code(), Code::kCorruption);
}

TEST(TapWire, ErrorCarriesAStatusMadePrintable) {
  uint8_t buf[kErrorFixed + kMaxErrorText];
  size_t n = EncodeError(buf, Code::kOutOfRange, "over budget\n\x01");
  auto d = DecodeError(std::span<const uint8_t>(buf, n));
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->code, Code::kOutOfRange);
  EXPECT_EQ(d->text, "over budget??");
  EXPECT_EQ(d->ToStatus().code(), Code::kOutOfRange);
  // Cut at the bound.
  n = EncodeError(buf, Code::kInternal, std::string(5000, 'x'));
  EXPECT_EQ(n, kErrorFixed + kMaxErrorText);
  // Unknown codes, reserved bytes, truncation.
  EXPECT_EQ(DecodeError(Le({{0, 2}, {0, 2}})).status().code(), Code::kCorruption);
  EXPECT_EQ(DecodeError(Le({{99, 2}, {0, 2}})).status().code(), Code::kCorruption);
  EXPECT_EQ(DecodeError(Le({{3, 2}, {1, 2}})).status().code(), Code::kCorruption);
  EXPECT_EQ(DecodeError(Le({{3, 2}})).status().code(), Code::kCorruption);
}

TEST(TapWire, DigestsRoundTripAndRefusals) {
  Digests d;
  d.first_chunk = 4096;
  d.last = true;
  d.hashes = {protocol::ChunkHash{1, 2}, protocol::ChunkHash{~0ull, 3}};
  std::vector<uint8_t> out(kDigestsFixed + 32);
  ASSERT_EQ(EncodeDigests(d, out), out.size());
  auto back = DecodeDigests(out);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->first_chunk, 4096u);
  EXPECT_TRUE(back->last);
  EXPECT_EQ(back->hashes, d.hashes);
  // A count that does not match the size, zero hashes, unknown flags.
  EXPECT_FALSE(DecodeDigests(std::span<const uint8_t>(out).first(out.size() - 16)).ok());
  std::vector<uint8_t> none(out.begin(), out.begin() + kDigestsFixed);
  none[8] = 0;
  EXPECT_FALSE(DecodeDigests(none).ok());
  out[12] = 3;
  EXPECT_FALSE(DecodeDigests(out).ok());
}

TEST(TapWire, EveryTypeHasBoundsAndAName) {
  for (uint16_t t = 1; t <= 9; ++t) {
    auto type = static_cast<MsgType>(t);
    EXPECT_GT(MaxPayload(type), 0u);
    EXPECT_LE(MinPayload(type), MaxPayload(type));
    EXPECT_STRNE(MsgTypeName(type), "unknown");
  }
  EXPECT_EQ(MaxPayload(static_cast<MsgType>(10)), 0u);
}

}  // namespace
}  // namespace romulus::disk::tap
