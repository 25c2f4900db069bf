// StagingQueue: hands reusable byte blocks from one producer thread to one
// consumer thread, in order, with bounded memory.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <vector>

#include "common/thread_annotations.h"

namespace romulus::buffer {

// Bounded pool of reusable byte blocks between a producer (the Xen driver's
// pipe reader) and a consumer (its stream worker). Blocks are allocated on
// first need, up to max_blocks, and then recycled: no allocation in steady
// state.
class StagingQueue {
 public:
  struct Block {
    std::unique_ptr<uint8_t[]> data;
    size_t len = 0;
  };
  StagingQueue(size_t block_bytes, size_t max_blocks);

  size_t block_bytes() const { return block_bytes_; }
  // A free block; blocks while all are in use. nullptr once aborted.
  Block* GetFree();
  void PushFull(Block* b);
  // The next full block in order; nullptr at end of input (after Close) or abort.
  Block* PopFull();
  void Recycle(Block* b);
  void Close();  // producer: no more blocks
  void Abort();  // both sides: stop now

  size_t allocated_blocks() const;
  size_t high_water_blocks() const;  // most blocks full at once

 private:
  const size_t block_bytes_, max_blocks_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<Block>> all_ GUARDED_BY(mu_);
  std::vector<Block*> free_ GUARDED_BY(mu_);
  std::deque<Block*> full_ GUARDED_BY(mu_);
  bool closed_ GUARDED_BY(mu_) = false;
  bool aborted_ GUARDED_BY(mu_) = false;
  size_t high_water_ GUARDED_BY(mu_) = 0;
};

}  // namespace romulus::buffer
