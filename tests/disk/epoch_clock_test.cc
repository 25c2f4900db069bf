// EpochCounter: tags, advance, and the drain that lets the engine seal an
// epoch only when no request tagged with it is still being executed.
#include "disk/epoch_clock.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

namespace romulus::disk {
namespace {

TEST(EpochCounter, TagsWithTheEpochInProgress) {
  EpochCounter c(5);
  EXPECT_EQ(c.current(), 5u);
  uint64_t a = c.Acquire();
  EXPECT_EQ(a, 5u);
  EXPECT_EQ(c.Advance(), 5u);  // returns the epoch that ended
  EXPECT_EQ(c.current(), 6u);
  uint64_t b = c.Acquire();
  EXPECT_EQ(b, 6u);
  EXPECT_EQ(c.in_flight(), 2u);
  c.Release(a);
  c.Release(b);
  EXPECT_EQ(c.in_flight(), 0u);
}

TEST(EpochCounter, DrainedWaitsForOlderTagsOnly) {
  EpochCounter c(1);
  uint64_t old = c.Acquire();  // read before the boundary
  c.Advance();
  uint64_t young = c.Acquire();  // read after it
  EXPECT_FALSE(c.Drained(1));
  EXPECT_FALSE(c.Drained(2));
  EXPECT_TRUE(c.Drained(0));
  c.Release(old);
  EXPECT_TRUE(c.Drained(1));   // epoch 1 is complete although 2 is not
  EXPECT_FALSE(c.Drained(2));
  c.Release(young);
  EXPECT_TRUE(c.Drained(2));
}

TEST(EpochCounter, SeveralRequestsWithOneTag) {
  EpochCounter c(1);
  uint64_t a = c.Acquire(), b = c.Acquire();
  c.Advance();
  c.Release(a);
  EXPECT_FALSE(c.Drained(1));
  c.Release(b);
  EXPECT_TRUE(c.Drained(1));
  c.Release(99);  // a stray release changes nothing
  EXPECT_EQ(c.in_flight(), 0u);
}

TEST(EpochCounter, WaitDrainedTimesOutThenSucceeds) {
  EpochCounter c(1);
  uint64_t t = c.Acquire();
  c.Advance();
  // A deadline already past: Timeout at once, whatever the machine's speed.
  Status st = c.WaitDrained(1, std::chrono::steady_clock::now());
  EXPECT_EQ(st.code(), Code::kTimeout) << st.ToString();
  std::thread releaser([&] { c.Release(t); });
  EXPECT_TRUE(c.WaitDrained(1, std::chrono::steady_clock::now() + std::chrono::minutes(5)).ok());
  releaser.join();
}

TEST(EpochCounter, AdvanceIsTotallyOrderedWithAcquire) {
  // Many threads acquire while the epoch advances: every tag is one that was
  // current, and counts balance.
  EpochCounter c(1);
  std::vector<std::thread> ts;
  std::atomic<bool> bad{false};
  for (int i = 0; i < 4; ++i) {
    ts.emplace_back([&] {
      for (int k = 0; k < 20000; ++k) {
        uint64_t before = c.current();
        uint64_t t = c.Acquire();
        uint64_t after = c.current();
        if (t < before || t > after) bad = true;
        c.Release(t);
      }
    });
  }
  for (int k = 0; k < 1000; ++k) c.Advance();
  for (auto& t : ts) t.join();
  EXPECT_FALSE(bad.load());
  EXPECT_EQ(c.in_flight(), 0u);
  EXPECT_TRUE(c.Drained(c.current()));
}

}  // namespace
}  // namespace romulus::disk
