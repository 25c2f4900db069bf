#include "common/little_endian.h"

#include <gtest/gtest.h>

#include <cstring>

namespace romulus {
namespace {

// The byte order is spelled out, whatever the host is, and the helpers must
// work at any alignment (fields sit at odd offsets inside frames and records).
TEST(LittleEndian, StoresLeastSignificantByteFirstAtAnyOffset) {
  uint8_t buf[16];
  for (size_t off = 0; off < 8; ++off) {
    std::memset(buf, 0xee, sizeof buf);
    StoreLE16(buf + off, 0x1234);
    const uint8_t want16[] = {0x34, 0x12, 0xee};
    EXPECT_EQ(0, std::memcmp(buf + off, want16, sizeof want16)) << off;

    StoreLE32(buf + off, 0xdeadbeef);
    const uint8_t want32[] = {0xef, 0xbe, 0xad, 0xde, 0xee};
    EXPECT_EQ(0, std::memcmp(buf + off, want32, sizeof want32)) << off;

    std::memset(buf, 0xee, sizeof buf);
    StoreLE64(buf + off, 0x0102030405060708ull);
    const uint8_t want64[] = {8, 7, 6, 5, 4, 3, 2, 1, 0xee};
    EXPECT_EQ(0, std::memcmp(buf + off, want64, sizeof want64)) << off;
    if (off > 0) {
      EXPECT_EQ(buf[off - 1], 0xee) << off;  // nothing written before p
    }
  }
}

TEST(LittleEndian, LoadsWhatStoreWrote) {
  uint8_t buf[16] = {};
  const uint8_t bytes[] = {0x01, 0x80, 0xff, 0x7f, 0x00, 0xaa, 0x55, 0xc3};
  std::memcpy(buf + 3, bytes, sizeof bytes);
  EXPECT_EQ(LoadLE16(buf + 3), 0x8001u);
  EXPECT_EQ(LoadLE32(buf + 3), 0x7fff8001u);
  EXPECT_EQ(LoadLE64(buf + 3), 0xc355aa007fff8001ull);

  for (uint64_t v : {uint64_t{0}, uint64_t{1}, ~uint64_t{0}, uint64_t{0x8000000000000000ull}}) {
    StoreLE64(buf + 5, v);
    EXPECT_EQ(LoadLE64(buf + 5), v);
    StoreLE32(buf + 1, static_cast<uint32_t>(v));
    EXPECT_EQ(LoadLE32(buf + 1), static_cast<uint32_t>(v));
    StoreLE16(buf + 7, static_cast<uint16_t>(v));
    EXPECT_EQ(LoadLE16(buf + 7), static_cast<uint16_t>(v));
  }
}

}  // namespace
}  // namespace romulus
