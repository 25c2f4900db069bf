// ReusableBuffer: a byte buffer reused from epoch to epoch — the backup's
// receive buffer (frames, an epoch's state), the primary's staging snapshot
// (TimerDriver) and the sink's. Capacity is kept separate from
// length (Xen's Remus compression reset its size each round and realloc'ed
// per chunk): Clear() forgets the contents but keeps the memory, growth is
// geometric up to a hard maximum, and a length asked for by the network is
// checked against that maximum before anything is allocated. Reallocations
// are counted so steady state can be shown to do none.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "common/status.h"

namespace romulus::buffer {

class ReusableBuffer {
 public:
  // initial may be 0; max_capacity is the hard bound on capacity().
  ReusableBuffer(size_t initial, size_t max_capacity);

  // Makes room for n more bytes after size() and returns a pointer to them
  // (not yet counted in size(): call Commit). OutOfRange, with nothing
  // allocated, if size()+n would exceed max_capacity (or overflow).
  Result<uint8_t*> Append(size_t n);
  void Commit(size_t n);
  // Ensures capacity() >= n without changing size(); same bounds as Append.
  Status Reserve(size_t n);
  void Clear() { len_ = 0; }  // keeps capacity

  uint8_t* data() { return data_.get(); }
  const uint8_t* data() const { return data_.get(); }
  size_t size() const { return len_; }
  size_t capacity() const { return cap_; }
  size_t max_capacity() const { return max_; }
  std::span<const uint8_t> view() const { return {data_.get(), len_}; }
  // Allocations made after construction (including the first one when
  // initial was 0); constant once the high-water mark has been reached.
  uint64_t reallocations() const { return reallocs_; }

 private:
  Status Grow(size_t need);
  std::unique_ptr<uint8_t[]> data_;
  size_t len_ = 0;
  size_t cap_ = 0;
  size_t max_;
  uint64_t reallocs_ = 0;
};

}  // namespace romulus::buffer
