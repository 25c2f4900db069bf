#include "protocol/wire.h"

#include <gtest/gtest.h>

#include <vector>

namespace romulus::protocol {
namespace {

TEST(Wire, RoundTripsIntegersLittleEndian) {
  uint8_t buf[15];
  Writer w(buf);
  w.U8(0xab);
  w.U16(0x1234);
  w.U32(0xdeadbeef);
  w.U64(0x0102030405060708ull);
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(w.size(), 15u);
  // Explicit byte order, whatever the host is.
  const uint8_t want[15] = {0xab, 0x34, 0x12, 0xef, 0xbe, 0xad, 0xde, 8, 7, 6, 5, 4, 3, 2, 1};
  EXPECT_EQ(0, memcmp(buf, want, sizeof want));

  Reader r(buf);
  uint8_t a;
  uint16_t b;
  uint32_t c;
  uint64_t d;
  ASSERT_TRUE(r.U8(&a) && r.U16(&b) && r.U32(&c) && r.U64(&d));
  EXPECT_EQ(a, 0xab);
  EXPECT_EQ(b, 0x1234);
  EXPECT_EQ(c, 0xdeadbeefu);
  EXPECT_EQ(d, 0x0102030405060708ull);
  EXPECT_EQ(r.remaining(), 0u);
  EXPECT_FALSE(r.U8(&a));
}

TEST(Wire, WriterOverflowIsStickyAndWritesNothing) {
  uint8_t buf[5] = {9, 9, 9, 9, 9};
  Writer w(buf);
  w.U32(1);
  w.U16(2);  // does not fit
  EXPECT_FALSE(w.ok());
  EXPECT_EQ(buf[4], 9);
  w.U8(3);  // would fit, but the writer already failed
  EXPECT_FALSE(w.ok());
  EXPECT_EQ(buf[4], 9);
}

TEST(Wire, ReaderRefusesShortInputWithoutTouchingOutput) {
  const uint8_t buf[3] = {1, 2, 3};
  Reader r(buf);
  uint32_t v = 77;
  EXPECT_FALSE(r.U32(&v));
  EXPECT_EQ(v, 77u);
  std::span<const uint8_t> s;
  EXPECT_FALSE(r.Bytes(4, &s));
  EXPECT_TRUE(r.Bytes(3, &s));
  EXPECT_EQ(s.size(), 3u);
  std::string str;
  EXPECT_FALSE(r.String(1, &str));
}

TEST(Wire, HugeLengthDoesNotOverflow) {
  const uint8_t buf[4] = {};
  Reader r(buf);
  std::span<const uint8_t> s;
  EXPECT_FALSE(r.Bytes(SIZE_MAX, &s));
  EXPECT_EQ(r.remaining(), 4u);
}

}  // namespace
}  // namespace romulus::protocol
