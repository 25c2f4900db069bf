// The local store behind one protected disk: a regular file or a block
// device, read and written with pread/pwrite, through O_DIRECT when the store
// supports it (docs/DISK.md §2). Front-end independent: the NBD server uses
// it today, a ublk front end can tomorrow.
//
// Memory: one bounce buffer of max_request bytes plus two blocks, aligned for
// O_DIRECT, and one block of scratch, allocated at Open and never again.
// Requests not aligned to the store's block size are done by
// read-modify-write of their edge blocks inside that buffer.
//
// Not thread-safe: one front end thread drives one store. Failures return
// Storage statuses; last_errno() keeps the errno behind the last one so a
// front end can answer with the matching protocol error (ENOSPC vs EIO).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "common/status.h"

namespace romulus::disk {

enum class DirectIo {
  kAuto,     // O_DIRECT when the store accepts it, else buffered (io_mode() says why)
  kOff,      // buffered
  kRequire,  // O_DIRECT or fail
};

struct BackingStoreOptions {
  DirectIo direct = DirectIo::kAuto;
  // The largest READ or WRITE a front end may hand in: the bounce buffer's size.
  uint32_t max_request = 32u << 20;
  bool read_only = false;
};

class BackingStore {
 public:
  static Result<std::unique_ptr<BackingStore>> Open(const std::string& path,
                                                    const BackingStoreOptions& options);
  ~BackingStore();
  BackingStore(const BackingStore&) = delete;
  BackingStore& operator=(const BackingStore&) = delete;

  uint64_t size() const { return size_; }
  // The first offset >= `offset` that may hold data (SEEK_DATA): size()
  // when only a hole follows. A store that cannot tell (a block device, a
  // file system without SEEK_DATA) answers `offset`: all of it may be data.
  // Any thread (it moves only the descriptor's file offset, which no
  // pread/pwrite uses).
  uint64_t DataFrom(uint64_t offset) const;
  bool direct() const { return direct_; }
  bool read_only() const { return options_.read_only; }
  bool is_block_device() const { return block_device_; }
  // Offsets and lengths the store needs for O_DIRECT (1 when buffered).
  uint32_t alignment() const { return align_; }
  uint32_t max_request() const { return options_.max_request; }
  // One line for the log: "O_DIRECT, 4096-byte blocks" or "buffered: ...why".
  const std::string& io_mode() const { return io_mode_; }
  const std::string& path() const { return path_; }

  // Reads [offset, offset+length): a span of the bounce buffer, valid until
  // the next call. InvalidArgument beyond the store or above max_request.
  Result<std::span<const uint8_t>> Read(uint64_t offset, uint32_t length);

  // A write in two steps, so a front end can receive the payload straight
  // into the aligned buffer: WriteBuffer gives the span to fill (empty if
  // the request is out of bounds), Write writes what it holds. fua: durable
  // before returning (RWF_DSYNC).
  std::span<uint8_t> WriteBuffer(uint64_t offset, uint32_t length);
  Status Write(uint64_t offset, uint32_t length, bool fua);

  // [offset, offset+length) reads as zeros afterwards: a zero-range (or, with
  // may_punch, a hole), else zeros written from the buffer.
  Status WriteZeroes(uint64_t offset, uint64_t length, bool may_punch, bool fua);
  // Punches a hole when the store can (reads as zeros afterwards): true; a
  // store that cannot keeps its data: false, and that is not an error (TRIM
  // is advisory).
  Result<bool> Trim(uint64_t offset, uint64_t length, bool fua);
  // Everything written so far is durable (fdatasync: data and device cache).
  Status Flush();

  // errno behind the last failure (0 if none), and for out-of-bounds calls EINVAL.
  int last_errno() const { return last_errno_; }

 private:
  BackingStore() = default;
  Status Fail(const std::string& what, int err);
  bool InBounds(uint64_t offset, uint64_t length) const;
  Status PreadFull(uint8_t* buf, size_t len, uint64_t offset);
  Status PwriteFull(const uint8_t* buf, size_t len, uint64_t offset, bool dsync);
  Status ZeroFill(uint64_t offset, uint64_t length);

  BackingStoreOptions options_;
  std::string path_;
  std::string io_mode_;
  int fd_ = -1;
  uint64_t size_ = 0;
  uint32_t align_ = 1;
  bool direct_ = false;
  bool block_device_ = false;
  bool dsync_flag_works_ = true;  // RWF_DSYNC; else pwrite + fdatasync
  int last_errno_ = 0;
  uint8_t* bounce_ = nullptr;  // max_request + 2 * kBufferAlign, kBufferAlign-aligned
  size_t bounce_size_ = 0;
  uint8_t* scratch_ = nullptr;  // one block, for the edges of unaligned writes
  // Where the current write's payload sits in bounce_ (set by WriteBuffer).
  uint64_t pending_offset_ = 0;
  uint32_t pending_length_ = 0;
  bool pending_ = false;
};

}  // namespace romulus::disk
