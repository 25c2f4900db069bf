// Positional file I/O that finishes what it starts: short reads and writes
// are resumed, EINTR is retried, and a failure is a Status::Storage naming
// `what` and errno. One home for the journal, the image and disk files, the
// backup's disk staging and its spill file.
#pragma once

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace romulus {

Status PwriteAll(int fd, const uint8_t* p, size_t n, uint64_t off, const std::string& what);
// pwritev of whole buffers, resumed after short writes (iov is consumed).
Status PwritevAll(int fd, std::vector<struct iovec>& iov, uint64_t off, const std::string& what);
// An end of file before n bytes is Storage ("unexpected end of file").
Status PreadAll(int fd, uint8_t* p, size_t n, uint64_t off, const std::string& what);
// Allocates the blocks of [off, off+len) (fallocate mode 0, data unchanged),
// so a later pwrite there cannot hit ENOSPC. Filesystems without fallocate
// are not an error: *supported is set false and the caller stops asking.
Status ReserveFileRange(int fd, uint64_t off, uint64_t len, bool* supported, const std::string& what);

}  // namespace romulus
