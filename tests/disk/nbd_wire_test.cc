// disk/nbd_wire: every encoder against bytes written out by hand from the
// NBD spec, every decoder against short, hostile and boundary inputs, and
// the request policy as a table.
#include "disk/nbd_wire.h"

#include <gtest/gtest.h>

#include <cerrno>
#include <vector>

#include "tests/disk/disk_test_util.h"

namespace romulus::disk::nbd {
namespace {

using romulus::disk::testing::PutBE;

TEST(NbdWire, BigEndianLoadsAndStores) {
  uint8_t b[8];
  StoreBE64(b, 0x0102030405060708ull);
  EXPECT_EQ(b[0], 1);
  EXPECT_EQ(b[7], 8);
  EXPECT_EQ(LoadBE64(b), 0x0102030405060708ull);
  StoreBE32(b, 0xa1b2c3d4u);
  EXPECT_EQ(b[0], 0xa1);
  EXPECT_EQ(LoadBE32(b), 0xa1b2c3d4u);
  StoreBE16(b, 0xbeef);
  EXPECT_EQ(b[0], 0xbe);
  EXPECT_EQ(LoadBE16(b), 0xbeef);
}

TEST(NbdWire, GreetingIsNbdmagicIhaveoptFlags) {
  uint8_t g[kGreetingSize];
  EncodeGreeting(g, kFlagFixedNewstyle | kFlagNoZeroes);
  const std::string text(reinterpret_cast<char*>(g), 16);
  EXPECT_EQ(text, "NBDMAGICIHAVEOPT");
  EXPECT_EQ(g[16], 0);
  EXPECT_EQ(g[17], 3);
}

TEST(NbdWire, ClientFlagsMustBeOffered) {
  auto decode = [](uint32_t flags, uint16_t offered) {
    uint8_t b[4];
    StoreBE32(b, flags);
    return DecodeClientFlags(b, offered);
  };
  const uint16_t both = kFlagFixedNewstyle | kFlagNoZeroes;
  ASSERT_TRUE(decode(0, both).ok());
  EXPECT_EQ(*decode(3, both), 3u);
  // NO_ZEROES when the server did not offer it, and undefined bits: drop.
  EXPECT_EQ(decode(kClientNoZeroes, kFlagFixedNewstyle).status().code(), Code::kCorruption);
  EXPECT_EQ(decode(4, both).status().code(), Code::kCorruption);
  EXPECT_EQ(decode(0x80000000u, both).status().code(), Code::kCorruption);
}

TEST(NbdWire, OptionHeaderNeedsIhaveopt) {
  std::vector<uint8_t> b;
  PutBE(&b, 0x49484156454F5054ull, 8);
  PutBE(&b, kOptGo, 4);
  PutBE(&b, 77, 4);
  auto h = DecodeOptionHeader(std::span<const uint8_t, kOptionHeaderSize>(b.data(), kOptionHeaderSize));
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h->option, kOptGo);
  EXPECT_EQ(h->length, 77u);
  b[3] ^= 1;
  EXPECT_EQ(DecodeOptionHeader(std::span<const uint8_t, kOptionHeaderSize>(b.data(), kOptionHeaderSize))
                .status().code(),
            Code::kCorruption);
}

TEST(NbdWire, OptionReplyHeaderLayout) {
  uint8_t h[kOptionReplyHeaderSize];
  EncodeOptionReplyHeader(h, kOptInfo, kRepErrUnknown, 9);
  std::vector<uint8_t> want;
  PutBE(&want, 0x0003e889045565a9ull, 8);
  PutBE(&want, 6, 4);
  PutBE(&want, 0x80000006u, 4);
  PutBE(&want, 9, 4);
  EXPECT_EQ(std::vector<uint8_t>(h, h + sizeof h), want);
}

std::vector<uint8_t> InfoData(const std::string& name, std::vector<uint16_t> infos) {
  std::vector<uint8_t> d;
  PutBE(&d, name.size(), 4);
  d.insert(d.end(), name.begin(), name.end());
  PutBE(&d, infos.size(), 2);
  for (uint16_t i : infos) PutBE(&d, i, 2);
  return d;
}

TEST(NbdWire, InfoRequestParses) {
  auto d = InfoData("disk0", {kInfoBlockSize, kInfoName});
  auto r = ParseInfoRequest(d);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->name, "disk0");
  EXPECT_EQ(r->count(), 2u);
  EXPECT_TRUE(r->Wants(kInfoBlockSize));
  EXPECT_TRUE(r->Wants(kInfoName));
  EXPECT_FALSE(r->Wants(kInfoDescription));
  auto empty = InfoData("", {});
  ASSERT_TRUE(ParseInfoRequest(empty).ok());
  EXPECT_EQ(ParseInfoRequest(empty)->name, "");
}

TEST(NbdWire, InfoRequestRejectsInconsistentLengths) {
  // Shorter than the fixed 6 bytes.
  std::vector<uint8_t> tiny = {0, 0, 0, 0, 0};
  EXPECT_EQ(ParseInfoRequest(tiny).status().code(), Code::kCorruption);
  // Name length beyond the data, including one that would overflow if added.
  for (uint32_t bad : {6u, 100u, 0xffffffffu, 0xfffffffau}) {
    auto d = InfoData("abc", {});
    StoreBE32(d.data(), bad);
    EXPECT_EQ(ParseInfoRequest(d).status().code(), Code::kCorruption) << bad;
  }
  // Count says 3 but 2 follow; count says 1 but 2 follow.
  auto d = InfoData("abc", {1, 2});
  StoreBE16(d.data() + 7, 3);
  EXPECT_FALSE(ParseInfoRequest(d).ok());
  StoreBE16(d.data() + 7, 1);
  EXPECT_FALSE(ParseInfoRequest(d).ok());
  // A 4097-byte name is over the spec's bound even if the bytes are there.
  auto big = InfoData(std::string(4097, 'x'), {});
  EXPECT_FALSE(ParseInfoRequest(big).ok());
  auto max = InfoData(std::string(4096, 'x'), {});
  EXPECT_TRUE(ParseInfoRequest(max).ok());
}

TEST(NbdWire, InfoPayloads) {
  uint8_t b[64];
  ASSERT_EQ(EncodeInfoExport(b, 0x123456789aull, 0x6d), 12u);
  std::vector<uint8_t> want;
  PutBE(&want, 0, 2);
  PutBE(&want, 0x123456789aull, 8);
  PutBE(&want, 0x6d, 2);
  EXPECT_EQ(std::vector<uint8_t>(b, b + 12), want);

  ASSERT_EQ(EncodeInfoBlockSize(b, 1, 4096, 32u << 20), 14u);
  want.clear();
  PutBE(&want, 3, 2);
  PutBE(&want, 1, 4);
  PutBE(&want, 4096, 4);
  PutBE(&want, 32u << 20, 4);
  EXPECT_EQ(std::vector<uint8_t>(b, b + 14), want);

  ASSERT_EQ(EncodeInfoName(b, "vm"), 4u);
  EXPECT_EQ(b[1], 1);
  EXPECT_EQ(b[2], 'v');
  ASSERT_EQ(EncodeRepServer(b, "vm"), 6u);
  EXPECT_EQ(LoadBE32(b), 2u);
  // Too small a buffer writes nothing.
  EXPECT_EQ(EncodeInfoExport(std::span<uint8_t>(b, 11), 1, 1), 0u);
  EXPECT_EQ(EncodeRepServer(std::span<uint8_t>(b, 5), "vm"), 0u);
}

TEST(NbdWire, ExportNameReplyZeroesUnlessAgreed) {
  std::vector<uint8_t> b(200, 0xee);
  ASSERT_EQ(EncodeExportNameReply(b, 1u << 20, 0x1, false), 134u);
  EXPECT_EQ(LoadBE64(b.data()), 1u << 20);
  EXPECT_EQ(LoadBE16(b.data() + 8), 1u);
  for (size_t i = 10; i < 134; ++i) ASSERT_EQ(b[i], 0) << i;
  EXPECT_EQ(b[134], 0xee);
  EXPECT_EQ(EncodeExportNameReply(b, 1, 1, true), 10u);
  EXPECT_EQ(EncodeExportNameReply(std::span<uint8_t>(b.data(), 133), 1, 1, false), 0u);
}

TEST(NbdWire, RequestRoundTripAndMagic) {
  Request r{kCmdFlagFua, kCmdWrite, 0x1122334455667788ull, 0xfffffffff000ull, 4096};
  uint8_t b[kRequestSize];
  EncodeRequest(b, r);
  std::vector<uint8_t> want;
  PutBE(&want, 0x25609513, 4);
  PutBE(&want, 1, 2);
  PutBE(&want, 1, 2);
  PutBE(&want, 0x1122334455667788ull, 8);
  PutBE(&want, 0xfffffffff000ull, 8);
  PutBE(&want, 4096, 4);
  EXPECT_EQ(std::vector<uint8_t>(b, b + kRequestSize), want);
  auto back = DecodeRequest(b);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->flags, r.flags);
  EXPECT_EQ(back->type, r.type);
  EXPECT_EQ(back->cookie, r.cookie);
  EXPECT_EQ(back->offset, r.offset);
  EXPECT_EQ(back->length, r.length);
  b[0] = 0x26;
  auto bad = DecodeRequest(b);
  EXPECT_EQ(bad.status().code(), Code::kCorruption);
  EXPECT_NE(bad.status().message().find("0x26609513"), std::string::npos) << bad.status().message();
}

TEST(NbdWire, SimpleReplyLayout) {
  uint8_t b[kSimpleReplySize];
  EncodeSimpleReply(b, kEinval, 42);
  std::vector<uint8_t> want;
  PutBE(&want, 0x67446698, 4);
  PutBE(&want, 22, 4);
  PutBE(&want, 42, 8);
  EXPECT_EQ(std::vector<uint8_t>(b, b + kSimpleReplySize), want);
}

TEST(NbdWire, ValidateRequestTable) {
  const uint64_t size = 1u << 20;
  const uint32_t max = 64 * 1024;
  const uint16_t rw = kTxHasFlags | kTxSendFlush | kTxSendFua | kTxSendTrim | kTxSendWriteZeroes;
  const uint16_t ro = kTxHasFlags | kTxSendFlush | kTxReadOnly;
  struct Case {
    uint16_t flags, type;
    uint64_t offset;
    uint32_t length;
    uint16_t tx;
    uint32_t want;
  } cases[] = {
      {0, kCmdRead, 0, 4096, rw, 0},
      {0, kCmdRead, size - 1, 1, rw, 0},
      {0, kCmdRead, size, 0, rw, 0},             // zero length at the end: nothing to do
      {0, kCmdRead, size, 1, rw, kEinval},       // beyond the end
      {0, kCmdRead, size - 1, 2, rw, kEinval},
      {0, kCmdRead, UINT64_MAX, 2, rw, kEinval}, // offset + length overflows
      {0, kCmdRead, 0, max, rw, 0},
      {0, kCmdRead, 0, max + 1, rw, kEinval},    // above max_request
      {kCmdFlagFua, kCmdRead, 0, 1, rw, 0},      // FUA accepted (ignored) on any command
      {kCmdFlagNoHole, kCmdRead, 0, 1, rw, kEinval},
      {kCmdFlagDf, kCmdRead, 0, 1, rw, kEinval}, // no structured replies
      {0, kCmdWrite, 0, max, rw, 0},
      {0, kCmdWrite, 0, max + 1, rw, kEinval},
      {0, kCmdWrite, size - 4096, 8192, rw, kEnospc},  // the spec: ENOSPC beyond the end
      {0, kCmdWrite, UINT64_MAX - 10, 100, rw, kEnospc},
      {kCmdFlagFua, kCmdWrite, 0, 1, rw, 0},
      {kCmdFlagFua, kCmdWrite, 0, 1, kTxHasFlags, kEinval},  // FUA not advertised
      {0, kCmdWrite, 0, 1, ro, kEperm},
      {0, kCmdTrim, 0, static_cast<uint32_t>(size), rw, 0},  // no data: not bound by max_request
      {0, kCmdTrim, 1, static_cast<uint32_t>(size), rw, kEinval},
      {0, kCmdTrim, 0, 1, ro, kEinval},                      // not advertised
      {kCmdFlagNoHole, kCmdWriteZeroes, 0, static_cast<uint32_t>(size), rw, 0},
      {kCmdFlagNoHole | kCmdFlagFua, kCmdWriteZeroes, 0, 1, rw, 0},
      {kCmdFlagFastZero, kCmdWriteZeroes, 0, 1, rw, kEinval},
      {0, kCmdWriteZeroes, size, 1, rw, kEnospc},
      {kCmdFlagNoHole, kCmdTrim, 0, 1, rw, kEinval},
      {0, kCmdFlush, 123, 456, rw, 0},           // reserved fields ignored
      {0, kCmdFlush, 0, 0, kTxHasFlags, kEinval},
      {0, kCmdDisc, 0, 0, rw, 0},
      {0, kCmdCache, 0, 1, rw, kEinval},
      {0, kCmdBlockStatus, 0, 1, rw, kEinval},
      {0, kCmdResize, 0, 0, rw, kEinval},
      {0, 9, 0, 0, rw, kEinval},
      {0, 0xffff, 0, 0, rw, kEinval},
  };
  for (const auto& c : cases) {
    Request r{c.flags, c.type, 7, c.offset, c.length};
    EXPECT_EQ(ValidateRequest(r, size, max, c.tx), c.want)
        << CommandName(c.type) << " flags " << c.flags << " offset " << c.offset << " length " << c.length;
  }
}

TEST(NbdWire, ErrnoMapping) {
  EXPECT_EQ(ErrorFromErrno(0), 0u);
  EXPECT_EQ(ErrorFromErrno(ENOSPC), kEnospc);
  EXPECT_EQ(ErrorFromErrno(EDQUOT), kEnospc);
  EXPECT_EQ(ErrorFromErrno(EFBIG), kEnospc);
  EXPECT_EQ(ErrorFromErrno(EROFS), kEperm);
  EXPECT_EQ(ErrorFromErrno(EINVAL), kEinval);
  EXPECT_EQ(ErrorFromErrno(EIO), kEio);
  EXPECT_EQ(ErrorFromErrno(EBADF), kEio);  // anything else
}

}  // namespace
}  // namespace romulus::disk::nbd
