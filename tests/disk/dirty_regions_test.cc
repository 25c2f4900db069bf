#include "disk/dirty_regions.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>

namespace romulus::disk {
namespace {

constexpr uint64_t R = DirtyRegions::kRegionBytes;
using Ranges = std::vector<std::pair<uint64_t, uint64_t>>;

TEST(DirtyRegions, NamesExactlyTheRegionsWrittenAfterTheTag) {
  DirtyRegions d(10 * R + 512);  // a last partial region
  d.Mark(1, 0, 512);
  d.Mark(2, 3 * R + 100, 2 * R);       // regions 3, 4, 5
  d.Mark(3, 10 * R, 512);              // the partial region, clipped
  d.Mark(3, 10 * R + 256, 1 << 20);    // runs off the end: clipped, no crash
  d.Mark(3, 99 * R, 4096);             // beyond the end: nothing
  EXPECT_EQ(d.ChangedSince(0), (Ranges{{0, R}, {3 * R, 3 * R}, {10 * R, 512}}));
  EXPECT_EQ(d.ChangedSince(1), (Ranges{{3 * R, 3 * R}, {10 * R, 512}}));
  EXPECT_EQ(d.ChangedSince(2), (Ranges{{10 * R, 512}}));
  EXPECT_EQ(d.ChangedSince(3), Ranges{});
  EXPECT_EQ(d.RegionsSince(0), 5u);
  EXPECT_EQ(d.RegionsSince(2), 1u);
}

TEST(DirtyRegions, ForgettingAnAckedTagKeepsLaterMarksAndRefusesOlderQuestions) {
  DirtyRegions d(16 * R);
  d.Mark(5, 0, R);
  d.Mark(6, R, R);
  d.Mark(7, 2 * R, R);
  d.Forget(6);
  EXPECT_EQ(d.forgotten_through(), 6u);
  EXPECT_EQ(d.ChangedSince(6), (Ranges{{2 * R, R}}));
  EXPECT_EQ(d.ChangedSince(7), Ranges{});
  EXPECT_FALSE(d.ChangedSince(5).has_value()) << "marks of tag 6 are gone: a copy as of 5 cannot be brought up";
  EXPECT_EQ(d.RegionsSince(5), 0u);
  d.Forget(3);  // an older ack changes nothing
  EXPECT_EQ(d.forgotten_through(), 6u);
  EXPECT_EQ(d.ChangedSince(6), (Ranges{{2 * R, R}}));
}

TEST(DirtyRegions, MergedBucketsOnlyEverAnswerMore) {
  DirtyRegions d(64 * R);
  // More tags than buckets: each tag writes its own region.
  for (uint64_t t = 1; t <= 20; ++t) d.Mark(t, t * R, 1);
  for (uint64_t since = 0; since <= 20; ++since) {
    auto got = d.ChangedSince(since);
    ASSERT_TRUE(got.has_value());
    // Every region written after `since` is named.
    for (uint64_t t = since + 1; t <= 20; ++t) {
      bool named = false;
      for (auto [off, len] : *got) named |= off <= t * R && t * R < off + len;
      EXPECT_TRUE(named) << "since " << since << ": region of tag " << t << " missing";
    }
    // Only the newest few buckets are exact; older questions may get more.
    if (since >= 20 - DirtyRegions::kMaxBuckets + 1) {
      EXPECT_EQ(d.RegionsSince(since), 20 - since) << since;
    }
  }
}

TEST(DirtyRegions, LargeRangesMarkEveryRegionAndNoOther) {
  DirtyRegions d(1000 * R);
  d.Mark(1, 3 * R + 5, 700 * R);  // regions 3..703, across word boundaries
  auto got = d.ChangedSince(0);
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(*got, (Ranges{{3 * R, 701 * R}}));
  EXPECT_EQ(d.RegionsSince(0), 701u);
  d.Mark(2, 0, 1000 * R);  // the whole disk (a TRIM)
  EXPECT_EQ(d.ChangedSince(1), (Ranges{{0, 1000 * R}}));
  EXPECT_EQ(d.RegionsSince(1), 1000u);
}

TEST(DirtyRegions, AnEmptyDiskAndZeroLengthsMarkNothing) {
  DirtyRegions d(0);
  d.Mark(1, 0, 4096);
  EXPECT_EQ(d.ChangedSince(0), Ranges{});
  DirtyRegions e(4 * R);
  e.Mark(1, R, 0);
  EXPECT_EQ(e.ChangedSince(0), Ranges{});
}

TEST(DirtyRegions, TheIteratedSetIsExactlyTheMarkedRegions) {
  // Random patterns with runs across word boundaries, whole empty and whole
  // full words, and a partial last region; the iterated ranges must be the
  // maximal runs of a naive per-region scan, and count() their regions.
  std::mt19937_64 rng(13);
  for (int round = 0; round < 50; ++round) {
    const uint64_t regions = 1 + rng() % 700;
    const uint64_t disk = regions * R - (rng() % 2 ? 512 : 0);
    DirtyRegions d(disk);
    std::vector<bool> model(regions, false);
    const int marks = static_cast<int>(rng() % 12);
    for (int m = 0; m < marks; ++m) {
      const uint64_t first = rng() % regions;
      const uint64_t n = 1 + (rng() % 3 == 0 ? rng() % 200 : rng() % 3);
      d.Mark(1 + rng() % 3, first * R + rng() % R / 2, n * R - R / 2);
      for (uint64_t r = first; r < std::min(regions, first + n); ++r) model[r] = true;
    }
    Ranges want;
    for (uint64_t r = 0; r < regions;) {
      if (!model[r]) {
        ++r;
        continue;
      }
      uint64_t e = r;
      while (e < regions && model[e]) ++e;
      want.emplace_back(r * R, std::min(disk, e * R) - r * R);
      r = e;
    }
    auto set = d.ChangedSetSince(0);
    ASSERT_TRUE(set.has_value());
    Ranges got;
    uint64_t cursor = 0;
    std::pair<uint64_t, uint64_t> range;
    while (set->Next(&cursor, &range)) got.push_back(range);
    EXPECT_EQ(got, want) << "round " << round;
    EXPECT_FALSE(set->Next(&cursor, &range)) << "an exhausted set stays exhausted";
    EXPECT_EQ(set->count(), d.RegionsSince(0));
    EXPECT_EQ(d.ChangedSince(0), want);
  }
}

}  // namespace
}  // namespace romulus::disk
