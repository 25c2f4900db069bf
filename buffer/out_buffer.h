// OutBuffer: the primary's preallocated output buffer. Fixed capacity chosen
// at construction; it never grows and never reallocates. Callers reserve
// space, write into it, commit what they wrote; when a reservation does not
// fit, the buffered bytes are handed to the flush callback first (the sender
// writes them to the socket) and the buffer starts again from empty.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>

#include "common/status.h"

namespace romulus::buffer {

class OutBuffer {
 public:
  using FlushFn = std::function<Status(std::span<const uint8_t>)>;
  static constexpr size_t kDefaultCapacity = 16u << 20;

  static Result<std::unique_ptr<OutBuffer>> Create(size_t capacity, FlushFn flush);

  // Returns a pointer to at least n writable bytes, flushing first if needed.
  // OutOfRange if n > capacity (it could never fit).
  Result<uint8_t*> Reserve(size_t n);
  // Marks n bytes (n <= the last reservation) as written.
  void Commit(size_t n);
  // Hands everything buffered to the flush callback (nothing if empty). If the
  // callback fails the bytes stay buffered and the error is returned.
  Status Flush();
  // Drops everything buffered without flushing (e.g. after the link broke).
  void Clear() { len_ = 0; reserved_ = 0; }

  size_t size() const { return len_; }
  size_t capacity() const { return cap_; }
  uint8_t* data() { return data_.get(); }
  size_t high_water() const { return high_water_; }  // largest size() reached
  uint64_t flushes() const { return flushes_; }

 private:
  OutBuffer(size_t cap, FlushFn flush);
  std::unique_ptr<uint8_t[]> data_;
  size_t cap_;
  size_t len_ = 0;
  size_t reserved_ = 0;
  size_t high_water_ = 0;
  uint64_t flushes_ = 0;
  FlushFn flush_;
};

}  // namespace romulus::buffer
