// ReusableBuffer growth policy: capacity doubles (from at least kMinGrow) until
// it covers the request, clipped to max_capacity. Because capacity is never
// given back, a backup that has seen its largest checkpoint once does no
// further allocation: the reallocation count stops moving.

#include "buffer/reusable_buffer.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <new>
#include <string>

namespace romulus::buffer {

namespace {
// Smallest capacity a first growth allocates: tiny frames should not cause a
// cascade of 1, 2, 4, ... byte reallocations.
constexpr size_t kMinGrow = 4096;
}  // namespace

ReusableBuffer::ReusableBuffer(size_t initial, size_t max_capacity) : max_(max_capacity) {
  initial = std::min(initial, max_capacity);
  if (initial > 0) {
    // A constructor cannot return a Status; if this fails the buffer simply
    // starts empty and the first Append reports the allocation failure.
    uint8_t* mem = new (std::nothrow) uint8_t[initial];
    if (mem != nullptr) {
      data_.reset(mem);
      cap_ = initial;
    }
  }
}

Result<uint8_t*> ReusableBuffer::Append(size_t n) {
  // Written as a subtraction so a hostile n near SIZE_MAX cannot wrap.
  if (n > max_ || len_ > max_ - n) {
    return Status::OutOfRange("buffer: " + std::to_string(len_) + " + " + std::to_string(n) +
                              " bytes exceeds the maximum of " + std::to_string(max_));
  }
  const size_t need = len_ + n;
  if (need > cap_) ROMULUS_RETURN_IF_ERROR(Grow(need));
  return data_.get() + len_;
}

void ReusableBuffer::Commit(size_t n) {
  // Clamped: committing beyond the capacity is a caller bug, and must not
  // turn into reading uninitialised or foreign memory later.
  len_ += std::min(n, cap_ - len_);
}

Status ReusableBuffer::Reserve(size_t n) {
  if (n > max_) {
    return Status::OutOfRange("buffer: reserve of " + std::to_string(n) +
                              " bytes exceeds the maximum of " + std::to_string(max_));
  }
  if (n > cap_) return Grow(n);
  return Status::Ok();
}

Status ReusableBuffer::Grow(size_t need) {
  // Callers have checked need <= max_.
  size_t cap = std::max(cap_, std::min(kMinGrow, max_));
  while (cap < need) {
    cap = (cap > max_ / 2) ? max_ : cap * 2;
  }
  uint8_t* mem = new (std::nothrow) uint8_t[cap];
  if (mem == nullptr) {
    return Status::FromErrno("buffer: growing to " + std::to_string(cap) + " bytes", ENOMEM);
  }
  if (len_ > 0) std::memcpy(mem, data_.get(), len_);
  data_.reset(mem);
  cap_ = cap;
  ++reallocs_;
  return Status::Ok();
}

}  // namespace romulus::buffer
