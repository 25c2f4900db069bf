// The IO_FLUSHER mark of a process that serves block I/O in user space
// (prctl PR_SET_IO_FLUSHER, Linux 5.6; docs/DISK.md §2).
//
// Why: `romulus disk-export` is the only way the kernel's requests to
// /dev/nbdN complete. If the export's own memory allocation waited for
// reclaim that writes back to that device, or its buffered writes to a
// file store were throttled behind dirty pages that only it can clean, the
// wait would never end. Marked, the kernel neither recurses into I/O for its
// allocations nor throttles its writes for others' dirty pages.
#pragma once

#include "common/status.h"

namespace romulus::disk {

// Marks the calling thread; threads and children created afterwards inherit
// the mark, so call it before any thread starts. IoError without
// CAP_SYS_RESOURCE (EPERM, said so); Unsupported before Linux 5.6 (EINVAL).
Status MarkIoFlusher();

// Whether the calling thread carries the mark.
Result<bool> IsIoFlusher();

}  // namespace romulus::disk
