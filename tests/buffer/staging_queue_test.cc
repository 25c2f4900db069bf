// StagingQueue (buffer/staging_queue.h): blocks reach the consumer in the
// order they were pushed, memory stays within max_blocks however much
// passes through, and Close/Abort end both sides' waits.
#include "buffer/staging_queue.h"

#include <gtest/gtest.h>

#include <cstring>
#include <thread>
#include <vector>

namespace romulus::buffer {
namespace {

TEST(StagingQueue, DeliversInOrderWithinItsBlockBound) {
  StagingQueue q(64, 3);
  constexpr int kBlocks = 1000;
  std::vector<int> seen;
  std::thread consumer([&] {
    while (StagingQueue::Block* b = q.PopFull()) {
      int v = 0;
      ASSERT_EQ(b->len, sizeof v);
      std::memcpy(&v, b->data.get(), sizeof v);
      seen.push_back(v);
      q.Recycle(b);
    }
  });
  for (int i = 0; i < kBlocks; ++i) {
    StagingQueue::Block* b = q.GetFree();
    ASSERT_NE(b, nullptr);
    std::memcpy(b->data.get(), &i, sizeof i);
    b->len = sizeof i;
    q.PushFull(b);
  }
  q.Close();
  consumer.join();
  ASSERT_EQ(seen.size(), static_cast<size_t>(kBlocks));
  for (int i = 0; i < kBlocks; ++i) EXPECT_EQ(seen[i], i);
  EXPECT_LE(q.allocated_blocks(), 3u) << "blocks are recycled, never more than max_blocks";
  EXPECT_LE(q.high_water_blocks(), 3u);
}

TEST(StagingQueue, AtLeastTwoBlocksSoProducerAndConsumerOverlap) {
  StagingQueue q(16, 0);
  StagingQueue::Block* a = q.GetFree();
  StagingQueue::Block* b = q.GetFree();
  EXPECT_NE(a, nullptr);
  EXPECT_NE(b, nullptr);
  EXPECT_NE(a, b);
}

TEST(StagingQueue, AbortWakesAProducerWaitingForAFreeBlock) {
  StagingQueue q(16, 2);
  q.PushFull(q.GetFree());
  q.PushFull(q.GetFree());  // both blocks full, none recycled
  StagingQueue::Block* got = reinterpret_cast<StagingQueue::Block*>(1);
  std::thread producer([&] { got = q.GetFree(); });  // blocks
  q.Abort();
  producer.join();
  EXPECT_EQ(got, nullptr);
  EXPECT_EQ(q.PopFull(), nullptr) << "after Abort nothing more is delivered";
}

TEST(StagingQueue, CloseDrainsWhatWasPushedThenEnds) {
  StagingQueue q(16, 4);
  StagingQueue::Block* b = q.GetFree();
  b->len = 5;
  q.PushFull(b);
  q.Close();
  StagingQueue::Block* first = q.PopFull();
  ASSERT_NE(first, nullptr);
  EXPECT_EQ(first->len, 5u);
  q.Recycle(first);
  EXPECT_EQ(q.PopFull(), nullptr);
}

}  // namespace
}  // namespace romulus::buffer
