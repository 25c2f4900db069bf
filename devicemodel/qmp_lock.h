// QmpLock: the lock libxl takes around every use of a guest's QMP socket
// (docs/DEVICE-MODEL.md §6) for its QMP connections: flock(LOCK_EX) on
//   XEN_LIB_DIR/userdata-l.DOMID.UUID.qmp-socket-lock
// QEMU serves one QMP client at a time and libxl connects per operation
// under this lock, so a replicator that took the socket without it would
// make `xl` time out or wait on that guest at random, and wait itself (in
// QEMU's backlog, for a greeting) while `xl` talks to the device model.
//
// Held for one checkpoint's pause (connect … cont), never across
// checkpoints: `xl` gets its turn between them. Waiting is bounded by the
// caller's deadline, because the guest is suspended while it waits.
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"
#include "transport/stream.h"

namespace romulus::devicemodel {

// libxl's name for the lock file ("/var/lib/xen" is XEN_LIB_DIR on Debian).
std::string LibxlQmpLockPath(const std::string& xen_lib_dir, uint32_t domid, const std::string& uuid);

class QmpLock {
 public:
  // Takes the lock on `path` by `deadline`; Timeout names the path (xl, or
  // another replicator, holds it). The file is created when missing, as
  // libxl does. A lock file replaced while waiting (libxl removes a
  // destroyed domain's userdata) is taken anew: holding the lock on an
  // unlinked file would exclude nobody.
  static Result<QmpLock> Acquire(const std::string& path, transport::Deadline deadline);
  QmpLock(QmpLock&& o) noexcept;
  QmpLock& operator=(QmpLock&& o) noexcept;
  QmpLock(const QmpLock&) = delete;
  QmpLock& operator=(const QmpLock&) = delete;
  ~QmpLock();  // unlinks the file, then releases the lock (as libxl does)

  const std::string& path() const { return path_; }

 private:
  QmpLock(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  void Release();
  int fd_ = -1;
  std::string path_;
};

}  // namespace romulus::devicemodel
