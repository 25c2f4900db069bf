#include "common/units.h"

#include <gtest/gtest.h>

namespace romulus {
namespace {

TEST(ParseSize, AcceptsBinarySuffixes) {
  EXPECT_EQ(*ParseSize("4096"), 4096u);
  EXPECT_EQ(*ParseSize("64M"), 64ull << 20);
  EXPECT_EQ(*ParseSize("64MiB"), 64ull << 20);
  EXPECT_EQ(*ParseSize("1g"), 1ull << 30);
  EXPECT_EQ(*ParseSize("1.5K"), 1536u);
  EXPECT_EQ(*ParseSize("2T"), 2ull << 40);
}

TEST(ParseSize, RejectsGarbage) {
  for (const char* bad : {"", "M", "-1", "64Q", "64 M", "1.5", "0x10", "1e3", "99999999999T"}) {
    EXPECT_FALSE(ParseSize(bad).ok()) << bad;
  }
}

TEST(ParseDuration, AcceptsUnits) {
  EXPECT_EQ(ParseDuration("25ms")->count(), 25000);
  EXPECT_EQ(ParseDuration("1s")->count(), 1000000);
  EXPECT_EQ(ParseDuration("1.5s")->count(), 1500000);
  EXPECT_EQ(ParseDuration("800us")->count(), 800);
  EXPECT_EQ(ParseDuration("2m")->count(), 120000000);
}

TEST(ParseDuration, RejectsBareNumbersAndUnknownUnits) {
  for (const char* bad : {"", "25", "25 ms", "ms", "25h", "-5ms", "1..2s"}) {
    EXPECT_FALSE(ParseDuration(bad).ok()) << bad;
  }
}

TEST(Format, IsHumanReadable) {
  EXPECT_EQ(FormatSize(64ull << 20), "64 MiB");
  EXPECT_EQ(FormatSize(512), "512 B");
  EXPECT_EQ(FormatSize(1536ull << 20), "1.5 GiB");
  EXPECT_EQ(FormatDuration(std::chrono::microseconds(25000)), "25 ms");
}

TEST(Status, CarriesCodeAndContext) {
  Status s = Status::Corruption("bad checksum").With("frame 7");
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.code(), Code::kCorruption);
  EXPECT_EQ(s.ToString(), "Corruption: frame 7: bad checksum");
  Result<int> r = Status::Timeout("x");
  EXPECT_FALSE(r.ok());
  Result<int> v = 5;
  EXPECT_TRUE(v.ok());
  EXPECT_EQ(*v, 5);
}

}  // namespace
}  // namespace romulus
