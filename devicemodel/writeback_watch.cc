#include "devicemodel/writeback_watch.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

namespace romulus::devicemodel {

Result<WritebackWatch> WritebackWatch::Open(const std::vector<std::string>& paths) {
  WritebackWatch w;
  for (const std::string& p : paths) {
    // Read-only: this process never writes the guest's disk. fsync of a
    // read-only descriptor is allowed and reports the file's errors all the
    // same (they belong to the file, sampled per descriptor at open).
    int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) return Status::FromErrno("opening emulated disk file " + p + " to watch its write-back", errno);
    w.files_.push_back(File{p, fd});
  }
  return w;
}

WritebackWatch::WritebackWatch(WritebackWatch&& o) noexcept : files_(std::exchange(o.files_, {})) {}

WritebackWatch& WritebackWatch::operator=(WritebackWatch&& o) noexcept {
  if (this != &o) {
    CloseAll();
    files_ = std::exchange(o.files_, {});
  }
  return *this;
}

WritebackWatch::~WritebackWatch() { CloseAll(); }

void WritebackWatch::CloseAll() {
  for (File& f : files_) {
    if (f.fd >= 0) ::close(f.fd);
  }
  files_.clear();
}

Status WritebackWatch::Check() {
  Status first;
  for (File& f : files_) {
    int rc;
    do {
      rc = ::fdatasync(f.fd);
    } while (rc != 0 && errno == EINTR);
    if (rc != 0 && first.ok()) {
      // Short, the errno early: it travels in a BYE of at most 256 bytes.
      first = Status::Storage(f.path + ": " + std::strerror(errno) +
                              ": a write the guest saw complete never reached it (QEMU's flush at stop ignored "
                              "the error)");
    }
  }
  return first;
}

}  // namespace romulus::devicemodel
