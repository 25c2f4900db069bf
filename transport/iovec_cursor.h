// The parts of one gathered write and how much of them is still to send:
// the one home of the "drop the parts sent whole, then the front of a
// partial one" bookkeeping every sendmsg loop needs (TCP stream, the NBD
// export's replies). Header-only, no allocation.
#pragma once

#include <sys/socket.h>
#include <sys/uio.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

namespace romulus::transport {

template <size_t kMaxParts>
class IovecCursor {
 public:
  // Empty parts are skipped. False (nothing set) for more than kMaxParts
  // non-empty parts.
  bool Init(std::span<const std::span<const uint8_t>> parts) {
    count_ = first_ = 0;
    for (const auto& p : parts) {
      if (p.empty()) continue;
      if (count_ == kMaxParts) {
        count_ = 0;
        return false;
      }
      iov_[count_++] = iovec{const_cast<uint8_t*>(p.data()), p.size()};
    }
    return true;
  }
  bool done() const { return first_ == count_; }
  // A msghdr over what is left (valid until the next Advance or Init).
  msghdr Message() {
    msghdr msg{};
    msg.msg_iov = iov_.data() + first_;
    msg.msg_iovlen = count_ - first_;
    return msg;
  }
  // `sent` bytes went out (at most what is left).
  void Advance(size_t sent) {
    while (first_ < count_ && sent >= iov_[first_].iov_len) sent -= iov_[first_++].iov_len;
    if (first_ < count_ && sent > 0) {
      iov_[first_].iov_base = static_cast<uint8_t*>(iov_[first_].iov_base) + sent;
      iov_[first_].iov_len -= sent;
    }
  }

 private:
  std::array<iovec, kMaxParts> iov_{};
  size_t count_ = 0, first_ = 0;
};

}  // namespace romulus::transport
