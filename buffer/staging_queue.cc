#include "buffer/staging_queue.h"

#include <algorithm>

namespace romulus::buffer {

StagingQueue::StagingQueue(size_t block_bytes, size_t max_blocks)
    : block_bytes_(block_bytes), max_blocks_(std::max<size_t>(max_blocks, 2)) {}

StagingQueue::Block* StagingQueue::GetFree() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    if (aborted_) return nullptr;
    if (!free_.empty()) {
      Block* b = free_.back();
      free_.pop_back();
      return b;
    }
    if (all_.size() < max_blocks_) {
      auto b = std::make_unique<Block>();
      b->data.reset(new uint8_t[block_bytes_]);
      all_.push_back(std::move(b));
      return all_.back().get();
    }
    cv_.wait(lock);
  }
}

void StagingQueue::PushFull(Block* b) {
  std::lock_guard<std::mutex> lock(mu_);
  full_.push_back(b);
  high_water_ = std::max(high_water_, full_.size());
  cv_.notify_all();
}

StagingQueue::Block* StagingQueue::PopFull() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return aborted_ || closed_ || !full_.empty(); });
  if (aborted_ || full_.empty()) return nullptr;
  Block* b = full_.front();
  full_.pop_front();
  return b;
}

void StagingQueue::Recycle(Block* b) {
  std::lock_guard<std::mutex> lock(mu_);
  b->len = 0;
  free_.push_back(b);
  cv_.notify_all();
}

void StagingQueue::Close() {
  std::lock_guard<std::mutex> lock(mu_);
  closed_ = true;
  cv_.notify_all();
}

void StagingQueue::Abort() {
  std::lock_guard<std::mutex> lock(mu_);
  aborted_ = true;
  cv_.notify_all();
}

size_t StagingQueue::allocated_blocks() const {
  std::lock_guard<std::mutex> lock(mu_);
  return all_.size();
}

size_t StagingQueue::high_water_blocks() const {
  std::lock_guard<std::mutex> lock(mu_);
  return high_water_;
}

}  // namespace romulus::buffer
