// WritebackWatch: catches the write-back errors of an HVM guest's emulated
// disks that QEMU's checkpoint `stop` swallows.
//
// With cache=writeback (libxl's default) QEMU completes a guest's IDE write
// once it is in dom0's page cache of the disk's file; the kernel writes it
// to the device later, and an error there is reported to each open
// descriptor once, at its next fsync (errseq). QEMU's `stop` flushes (so the
// checkpoint's cut includes every completed write) but qmp_stop ignores the
// flush's result: the error is consumed on QEMU's descriptor and neither
// QEMU nor the guest ever hears of it. Without Romulus the guest's own next
// FLUSH would have failed; with a `stop` every epoch it never does. The
// checkpoint cut then would hold memory that believes a write its disk lacks.
//
// This watch holds descriptors of its own (read-only; opened before the
// first checkpoint, so every later error is reported to them too) and
// flushes them inside each pause, after QEMU's stop: an error means a write
// the guest saw complete since the last check never reached the disk.
//
// The flush runs on a thread of the watch's own, so a device that stops
// answering costs the pause a deadline, not forever: fdatasync cannot be
// interrupted (the thread sleeps uninterruptibly until the device answers;
// even the process's exit waits for it). Mechanism only: what an error or a
// timeout means for the checkpoint is the driver's (docs/DEVICE-MODEL.md
// §2.2).
#pragma once

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/status.h"
#include "transport/stream.h"

namespace romulus::devicemodel {

class WritebackWatch {
 public:
  // Opens each of `paths` (the IDE drives' files) read-only. Errors that
  // happen from now on are reported by Check.
  static Result<WritebackWatch> Open(const std::vector<std::string>& paths);

  WritebackWatch() = default;
  WritebackWatch(WritebackWatch&& o) noexcept;
  WritebackWatch& operator=(WritebackWatch&& o) noexcept;
  WritebackWatch(const WritebackWatch&) = delete;
  WritebackWatch& operator=(const WritebackWatch&) = delete;
  // Joins the flush thread, or leaves it to finish alone (it owns what it
  // uses) when a flush still waits for its device.
  ~WritebackWatch();

  // fdatasync of every file (which also flushes the device's cache, as
  // QEMU's stop did): Ok when every write anyone made to them since the
  // previous Check (since Open, the first time) reached its device; else
  // kStorage naming the file and the error. Every file is checked even
  // after one failed (each error is reported once: one not read now would
  // be lost).
  // kTimeout when the flushes have not all returned by `deadline`: whether
  // the writes reached the device is unknown. Until that flush returns,
  // every Check is kTimeout at once; an error it returns late is reported
  // by the first Check after it.
  Status Check(transport::Deadline deadline);

  size_t size() const;  // the files watched

 private:
  struct Flusher;  // the files, and what the thread and Check share

  void Stop();

  std::shared_ptr<Flusher> flusher_;
  std::thread thread_;
};

}  // namespace romulus::devicemodel
