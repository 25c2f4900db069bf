#include "buffer/reusable_buffer.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#define ROMULUS_TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ROMULUS_TEST_ASAN 1
#endif
#endif

namespace romulus::buffer {
namespace {

constexpr size_t kMax = std::numeric_limits<size_t>::max();

Status AppendBytes(ReusableBuffer* rb, const uint8_t* p, size_t n) {
  auto dst = rb->Append(n);
  if (!dst.ok()) return dst.status();
  if (n) std::memcpy(*dst, p, n);
  rb->Commit(n);
  return Status::Ok();
}

TEST(ReusableBufferTest, InitialCapacityAndClearKeepsIt) {
  ReusableBuffer rb(1000, 1 << 20);
  EXPECT_EQ(rb.capacity(), 1000u);
  EXPECT_EQ(rb.size(), 0u);
  std::vector<uint8_t> v(700, 3);
  ASSERT_TRUE(AppendBytes(&rb, v.data(), v.size()).ok());
  EXPECT_EQ(rb.size(), 700u);
  EXPECT_EQ(rb.reallocations(), 0u);
  rb.Clear();
  EXPECT_EQ(rb.size(), 0u);
  EXPECT_EQ(rb.capacity(), 1000u);
}

TEST(ReusableBufferTest, InitialIsClippedToMax) {
  ReusableBuffer rb(1 << 20, 100);
  EXPECT_EQ(rb.capacity(), 100u);
  EXPECT_EQ(rb.max_capacity(), 100u);
}

TEST(ReusableBufferTest, GrowsGeometricallyAndKeepsContents) {
  ReusableBuffer rb(0, 1 << 24);
  EXPECT_EQ(rb.capacity(), 0u);
  std::vector<uint8_t> all;
  std::vector<size_t> caps;
  uint8_t c = 0;
  for (int i = 0; i < 20; ++i) {
    std::vector<uint8_t> chunk(3000);
    for (auto& b : chunk) b = c++;
    ASSERT_TRUE(AppendBytes(&rb, chunk.data(), chunk.size()).ok());
    all.insert(all.end(), chunk.begin(), chunk.end());
    if (caps.empty() || caps.back() != rb.capacity()) caps.push_back(rb.capacity());
  }
  ASSERT_EQ(rb.size(), all.size());
  EXPECT_EQ(0, std::memcmp(rb.data(), all.data(), all.size()));
  // 60000 bytes from 4096 by doubling: 4096, 8192, ..., 65536.
  EXPECT_EQ(caps, (std::vector<size_t>{4096, 8192, 16384, 32768, 65536}));
  EXPECT_EQ(rb.reallocations(), caps.size());
  EXPECT_EQ(rb.view().size(), all.size());
}

TEST(ReusableBufferTest, GrowthIsClippedAtMaxAndMaxIsReachable) {
  ReusableBuffer rb(0, 10000);
  ASSERT_TRUE(rb.Append(9000).ok());
  EXPECT_EQ(rb.capacity(), 10000u);  // 4096 -> 8192 would not do, 16384 is clipped
  rb.Commit(9000);
  ASSERT_TRUE(rb.Append(1000).ok());
  rb.Commit(1000);
  EXPECT_EQ(rb.size(), 10000u);
  auto r = rb.Append(1);
  EXPECT_EQ(r.status().code(), Code::kOutOfRange);
  EXPECT_EQ(rb.size(), 10000u);
  EXPECT_EQ(rb.capacity(), 10000u);
}

TEST(ReusableBufferTest, BoundRejectedBeforeAllocating) {
  ReusableBuffer rb(0, 1 << 20);
  auto r = rb.Append((1 << 20) + 1);
  EXPECT_EQ(r.status().code(), Code::kOutOfRange);
  EXPECT_EQ(rb.capacity(), 0u);
  EXPECT_EQ(rb.reallocations(), 0u);
  EXPECT_EQ(rb.Reserve((1 << 20) + 1).code(), Code::kOutOfRange);
  EXPECT_EQ(rb.capacity(), 0u);
  EXPECT_EQ(rb.reallocations(), 0u);
}

// size() + n must not wrap: with max = SIZE_MAX any n near SIZE_MAX would
// pass a naive `size + n > max` check after wrapping around.
TEST(ReusableBufferTest, OverflowArithmeticIsRejected) {
  ReusableBuffer rb(0, kMax);
  ASSERT_TRUE(rb.Append(100).ok());
  rb.Commit(100);
  const uint64_t before = rb.reallocations();
  for (size_t n : {kMax, kMax - 1, kMax - 99, kMax - 50}) {
    auto r = rb.Append(n);
    EXPECT_EQ(r.status().code(), Code::kOutOfRange) << n;
  }
  EXPECT_EQ(rb.reallocations(), before);
  EXPECT_EQ(rb.size(), 100u);
  EXPECT_EQ(rb.capacity(), 4096u);
  // With a small max, n == max with a non-empty buffer is rejected too.
  ReusableBuffer small(0, 64);
  ASSERT_TRUE(small.Append(1).ok());
  small.Commit(1);
  EXPECT_EQ(small.Append(64).status().code(), Code::kOutOfRange);
  EXPECT_TRUE(small.Append(63).ok());
}

TEST(ReusableBufferTest, AllocationFailureIsAStatus) {
#ifdef ROMULUS_TEST_ASAN
  GTEST_SKIP() << "ASan aborts on impossible allocations instead of returning null";
#else
  ReusableBuffer rb(0, kMax);
  // Far more than any machine's address space: the allocator must say no.
  auto r = rb.Append(kMax / 4);
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kIoError);
  EXPECT_EQ(rb.capacity(), 0u);
  EXPECT_EQ(rb.reallocations(), 0u);
  // Still usable afterwards.
  ASSERT_TRUE(rb.Append(10).ok());
#endif
}

TEST(ReusableBufferTest, CommitIsClampedToCapacity) {
  ReusableBuffer rb(16, 16);
  ASSERT_TRUE(rb.Append(8).ok());
  rb.Commit(1000);
  EXPECT_EQ(rb.size(), 16u);
}

TEST(ReusableBufferTest, ReserveDoesNotChangeSize) {
  ReusableBuffer rb(0, 1 << 20);
  ASSERT_TRUE(rb.Append(10).ok());
  rb.Commit(10);
  ASSERT_TRUE(rb.Reserve(50000).ok());
  EXPECT_GE(rb.capacity(), 50000u);
  EXPECT_EQ(rb.size(), 10u);
  const size_t cap = rb.capacity();
  ASSERT_TRUE(rb.Reserve(100).ok());  // never shrinks
  EXPECT_EQ(rb.capacity(), cap);
}

// The Remus round: each epoch receives a checkpoint in chunks of varying size
// and clears the buffer at the end. After the largest checkpoint has been
// seen once, no epoch allocates again.
TEST(ReusableBufferTest, ZeroReallocationsAfterWarmUp) {
  ReusableBuffer rb(0, 64 << 20);
  std::mt19937_64 rng(7);
  std::vector<uint8_t> chunk(1 << 16);
  for (size_t i = 0; i < chunk.size(); ++i) chunk[i] = static_cast<uint8_t>(i * 31);
  constexpr size_t kMaxCheckpoint = 3 << 20;
  // Warm-up: one checkpoint of the largest size.
  for (size_t got = 0; got < kMaxCheckpoint;) {
    size_t n = std::min(chunk.size(), kMaxCheckpoint - got);
    ASSERT_TRUE(AppendBytes(&rb, chunk.data(), n).ok());
    got += n;
  }
  rb.Clear();
  const uint64_t warm = rb.reallocations();
  const uint8_t* const data = rb.data();
  const size_t cap = rb.capacity();
  EXPECT_GT(warm, 0u);
  for (int epoch = 0; epoch < 200; ++epoch) {
    size_t total = rng() % (kMaxCheckpoint + 1);
    size_t got = 0;
    while (got < total) {
      size_t n = std::min<size_t>(1 + rng() % chunk.size(), total - got);
      ASSERT_TRUE(AppendBytes(&rb, chunk.data(), n).ok());
      // Spot-check the bytes just appended.
      ASSERT_EQ(rb.data()[got], chunk[0]);
      got += n;
    }
    ASSERT_EQ(rb.size(), total);
    rb.Clear();
  }
  EXPECT_EQ(rb.reallocations(), warm);
  EXPECT_EQ(rb.data(), data);
  EXPECT_EQ(rb.capacity(), cap);
}

TEST(ReusableBufferTest, ZeroMaxAcceptsOnlyEmpty) {
  ReusableBuffer rb(10, 0);
  EXPECT_EQ(rb.capacity(), 0u);
  EXPECT_TRUE(rb.Append(0).ok());
  EXPECT_EQ(rb.Append(1).status().code(), Code::kOutOfRange);
}

}  // namespace
}  // namespace romulus::buffer
