#include "disk/io_flusher.h"

#include <sys/prctl.h>

#include <cerrno>

// Linux 5.6's values, for headers older than the kernel we run on.
#ifndef PR_SET_IO_FLUSHER
#define PR_SET_IO_FLUSHER 57
#define PR_GET_IO_FLUSHER 58
#endif

namespace romulus::disk {

Status MarkIoFlusher() {
  if (::prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0) == 0) return Status::Ok();
  const int err = errno;
  if (err == EINVAL) return Status::Unsupported("PR_SET_IO_FLUSHER: this kernel predates it (Linux 5.6)");
  if (err == EPERM) return Status::FromErrno("PR_SET_IO_FLUSHER (needs CAP_SYS_RESOURCE)", err);
  return Status::FromErrno("PR_SET_IO_FLUSHER", err);
}

Result<bool> IsIoFlusher() {
  const int r = ::prctl(PR_GET_IO_FLUSHER, 0, 0, 0, 0);
  if (r < 0) {
    const int err = errno;
    if (err == EINVAL) return Status::Unsupported("PR_GET_IO_FLUSHER: this kernel predates it (Linux 5.6)");
    return Status::FromErrno("PR_GET_IO_FLUSHER", err);
  }
  return r == 1;
}

}  // namespace romulus::disk
