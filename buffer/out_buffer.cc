// OutBuffer: one fixed allocation made at Create(); afterwards the only
// memory the sender touches per epoch is this buffer, so a checkpoint can
// never fail half-way because the allocator said no.

#include "buffer/out_buffer.h"

#include <cerrno>
#include <new>
#include <string>
#include <utility>

namespace romulus::buffer {

OutBuffer::OutBuffer(size_t cap, FlushFn flush) : cap_(cap), flush_(std::move(flush)) {}

Result<std::unique_ptr<OutBuffer>> OutBuffer::Create(size_t capacity, FlushFn flush) {
  if (capacity == 0) return Status::InvalidArgument("outbuf capacity must be > 0");
  if (!flush) return Status::InvalidArgument("outbuf needs a flush callback");
  // nothrow: a capacity the machine cannot back is a configuration error to
  // report, not a reason to terminate the replicator.
  uint8_t* mem = new (std::nothrow) uint8_t[capacity];
  if (mem == nullptr) {
    return Status::FromErrno("allocating outbuf of " + std::to_string(capacity) + " bytes", ENOMEM);
  }
  std::unique_ptr<OutBuffer> ob(new (std::nothrow) OutBuffer(capacity, std::move(flush)));
  if (!ob) {
    delete[] mem;
    return Status::FromErrno("allocating outbuf", ENOMEM);
  }
  ob->data_.reset(mem);
  return ob;
}

Result<uint8_t*> OutBuffer::Reserve(size_t n) {
  if (n > cap_) {
    return Status::OutOfRange("reservation of " + std::to_string(n) + " bytes exceeds outbuf capacity " +
                              std::to_string(cap_));
  }
  reserved_ = 0;
  if (n > cap_ - len_) ROMULUS_RETURN_IF_ERROR(Flush());
  reserved_ = n;
  return data_.get() + len_;
}

void OutBuffer::Commit(size_t n) {
  // Committing more than was reserved is a caller bug; clamping keeps the
  // buffer's invariant (len_ <= cap_) instead of corrupting memory.
  if (n > reserved_) n = reserved_;
  len_ += n;
  reserved_ = 0;
  if (len_ > high_water_) high_water_ = len_;
}

Status OutBuffer::Flush() {
  if (len_ == 0) return Status::Ok();
  // On failure the bytes stay buffered: the caller knows the link is broken
  // and decides (Clear() and resync); nothing is silently dropped here.
  ROMULUS_RETURN_IF_ERROR(flush_(std::span<const uint8_t>(data_.get(), len_)));
  len_ = 0;
  reserved_ = 0;
  ++flushes_;
  return Status::Ok();
}

}  // namespace romulus::buffer
