#include "buffer/out_buffer.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

namespace romulus::buffer {
namespace {

// Collects everything flushed, remembering each flush's size.
struct Sink {
  std::vector<uint8_t> bytes;
  std::vector<size_t> sizes;
  OutBuffer::FlushFn Fn() {
    return [this](std::span<const uint8_t> s) {
      bytes.insert(bytes.end(), s.begin(), s.end());
      sizes.push_back(s.size());
      return Status::Ok();
    };
  }
};

TEST(OutBufferTest, CreateRejectsBadArguments) {
  EXPECT_EQ(OutBuffer::Create(0, [](std::span<const uint8_t>) { return Status::Ok(); }).status().code(),
            Code::kInvalidArgument);
  EXPECT_EQ(OutBuffer::Create(16, nullptr).status().code(), Code::kInvalidArgument);
}

TEST(OutBufferTest, ReserveLargerThanCapacityIsOutOfRange) {
  Sink sink;
  auto ob = OutBuffer::Create(64, sink.Fn());
  ASSERT_TRUE(ob.ok());
  auto r = (*ob)->Reserve(65);
  EXPECT_EQ(r.status().code(), Code::kOutOfRange);
  EXPECT_TRUE(sink.sizes.empty());
  auto r2 = (*ob)->Reserve(64);
  ASSERT_TRUE(r2.ok());
}

TEST(OutBufferTest, FlushesBeforeOverflowAndNeverMoves) {
  Sink sink;
  auto obr = OutBuffer::Create(100, sink.Fn());
  ASSERT_TRUE(obr.ok());
  OutBuffer& ob = **obr;
  uint8_t* const base = ob.data();

  auto a = ob.Reserve(60);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(*a, base);
  std::memset(*a, 'a', 60);
  ob.Commit(60);
  EXPECT_EQ(ob.size(), 60u);

  // 41 more do not fit: the 60 go to the callback first.
  auto b = ob.Reserve(41);
  ASSERT_TRUE(b.ok());
  ASSERT_EQ(sink.sizes.size(), 1u);
  EXPECT_EQ(sink.sizes[0], 60u);
  EXPECT_EQ(*b, base);
  EXPECT_EQ(ob.size(), 0u);
  std::memset(*b, 'b', 30);
  ob.Commit(30);  // less than reserved is fine

  // 70 fit exactly after the 30.
  auto c = ob.Reserve(70);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(*c, base + 30);
  EXPECT_EQ(sink.sizes.size(), 1u);
  std::memset(*c, 'c', 70);
  ob.Commit(70);
  EXPECT_EQ(ob.size(), 100u);
  EXPECT_EQ(ob.high_water(), 100u);

  ASSERT_TRUE(ob.Flush().ok());
  EXPECT_EQ(ob.size(), 0u);
  EXPECT_EQ(ob.flushes(), 2u);
  EXPECT_EQ(ob.data(), base);
  EXPECT_EQ(ob.capacity(), 100u);
  std::string got(sink.bytes.begin(), sink.bytes.end());
  EXPECT_EQ(got, std::string(60, 'a') + std::string(30, 'b') + std::string(70, 'c'));

  // Flushing an empty buffer does not call back.
  ASSERT_TRUE(ob.Flush().ok());
  EXPECT_EQ(sink.sizes.size(), 2u);
}

TEST(OutBufferTest, CommitIsClampedToReservation) {
  Sink sink;
  auto obr = OutBuffer::Create(32, sink.Fn());
  ASSERT_TRUE(obr.ok());
  OutBuffer& ob = **obr;
  ASSERT_TRUE(ob.Reserve(8).ok());
  ob.Commit(1000);
  EXPECT_EQ(ob.size(), 8u);
  ob.Commit(5);  // no reservation outstanding
  EXPECT_EQ(ob.size(), 8u);
}

TEST(OutBufferTest, FlushErrorKeepsBytesAndPropagates) {
  int calls = 0;
  bool fail = true;
  std::vector<uint8_t> got;
  auto obr = OutBuffer::Create(16, [&](std::span<const uint8_t> s) {
    ++calls;
    if (fail) return Status::IoError("link down");
    got.assign(s.begin(), s.end());
    return Status::Ok();
  });
  ASSERT_TRUE(obr.ok());
  OutBuffer& ob = **obr;
  auto a = ob.Reserve(10);
  ASSERT_TRUE(a.ok());
  std::memset(*a, 7, 10);
  ob.Commit(10);
  auto b = ob.Reserve(10);
  EXPECT_EQ(b.status().code(), Code::kIoError);
  EXPECT_EQ(ob.size(), 10u);
  EXPECT_EQ(ob.flushes(), 0u);
  fail = false;
  ASSERT_TRUE(ob.Flush().ok());
  EXPECT_EQ(got, std::vector<uint8_t>(10, 7));
  EXPECT_EQ(calls, 2);

  auto c = ob.Reserve(4);
  ASSERT_TRUE(c.ok());
  ob.Commit(4);
  ob.Clear();
  EXPECT_EQ(ob.size(), 0u);
}

// Many "epochs" of random-sized records: every byte arrives once, in order,
// the buffer's storage never changes, and no flush exceeds the capacity.
TEST(OutBufferTest, RandomRecordsArriveInOrder) {
  Sink sink;
  constexpr size_t kCap = 8192;
  auto obr = OutBuffer::Create(kCap, sink.Fn());
  ASSERT_TRUE(obr.ok());
  OutBuffer& ob = **obr;
  uint8_t* const base = ob.data();
  std::mt19937_64 rng(42);
  std::vector<uint8_t> expect;
  uint8_t counter = 0;
  for (int epoch = 0; epoch < 50; ++epoch) {
    for (int rec = 0; rec < 200; ++rec) {
      size_t want = rng() % (kCap + 1);
      size_t used = want ? rng() % (want + 1) : 0;
      auto p = ob.Reserve(want);
      ASSERT_TRUE(p.ok());
      ASSERT_GE(*p, base);
      ASSERT_LE(*p + want, base + kCap);
      for (size_t i = 0; i < used; ++i) {
        (*p)[i] = counter;
        expect.push_back(counter++);
      }
      ob.Commit(used);
    }
    ASSERT_TRUE(ob.Flush().ok());
  }
  EXPECT_EQ(ob.data(), base);
  EXPECT_EQ(ob.capacity(), kCap);
  EXPECT_EQ(sink.bytes, expect);
  for (size_t s : sink.sizes) EXPECT_LE(s, kCap);
  EXPECT_LE(ob.high_water(), kCap);
}

}  // namespace
}  // namespace romulus::buffer
