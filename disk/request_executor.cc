#include "disk/request_executor.h"

#include <algorithm>
#include <utility>

namespace romulus::disk {

DiskOutcome RequestExecutor::Failed(const Ticket& t, uint64_t offset, uint64_t length, Status why) {
  // Part of the range may have landed: its content is unknown, the engine
  // re-reads it (DISK.md §2).
  if (sink_ != nullptr) sink_->OnWriteFailed(t.tag(), offset, length);
  last_failure_ = std::move(why);
  return DiskOutcome::kFailed;
}

DiskOutcome RequestExecutor::Write(const Ticket& t, uint64_t offset, std::span<const uint8_t> payload, bool fua) {
  const auto length = static_cast<uint32_t>(payload.size());
  if (length == 0) return DiskOutcome::kDone;
  Status w = store_->Write(offset, length, fua);
  if (!w.ok()) return Failed(t, offset, length, std::move(w));
  // The payload is still in the bounce buffer (Write only fills the edges
  // around it).
  if (sink_ != nullptr) sink_->OnWrite(t.tag(), offset, payload, fua);
  return DiskOutcome::kDone;
}

DiskOutcome RequestExecutor::Flush(const Ticket& t) {
  Status f = store_->Flush();
  if (!f.ok()) {
    // Nothing was mutated by a failed flush: no range to re-read.
    last_failure_ = std::move(f);
    return DiskOutcome::kFailed;
  }
  if (sink_ != nullptr) sink_->OnFlush(t.tag());
  return DiskOutcome::kDone;
}

DiskOutcome RequestExecutor::Trim(const Ticket& t, uint64_t offset, uint64_t length, bool fua) {
  if (length == 0) return DiskOutcome::kDone;
  Result<bool> r = store_->Trim(offset, length, fua);
  if (!r.ok()) return Failed(t, offset, length, r.status());
  if (!*r) return DiskOutcome::kTrimIgnored;  // the data is still there, on both sides
  if (sink_ != nullptr) sink_->OnZero(t.tag(), offset, length, /*trim=*/true, fua);
  return DiskOutcome::kDone;
}

DiskOutcome RequestExecutor::WriteZeroes(const Ticket& t, uint64_t offset, uint64_t length, bool may_punch,
                                         bool fua) {
  if (length == 0) return DiskOutcome::kDone;
  Status z = store_->WriteZeroes(offset, length, may_punch, fua);
  if (!z.ok()) return Failed(t, offset, length, std::move(z));
  if (sink_ != nullptr) sink_->OnZero(t.tag(), offset, length, /*trim=*/false, fua);
  return DiskOutcome::kDone;
}

Status RequestExecutor::WriteBytes(uint64_t offset, std::span<const uint8_t> bytes, bool fua) {
  if (bytes.size() > store_->max_request() || offset > store_->size() || bytes.size() > store_->size() - offset) {
    return Status::InvalidArgument("disk write of " + std::to_string(bytes.size()) + " bytes at " +
                                   std::to_string(offset) + " is outside the store or above its request bound");
  }
  Ticket t = Begin();
  std::span<uint8_t> buf = store_->WriteBuffer(offset, static_cast<uint32_t>(bytes.size()));
  if (buf.size() != bytes.size()) return Status::Internal("disk write buffer refused an in-bounds write");
  std::copy(bytes.begin(), bytes.end(), buf.begin());
  if (Write(t, offset, buf, fua) == DiskOutcome::kFailed) return last_failure_;
  return Status::Ok();
}

Status RequestExecutor::FlushAll() {
  Ticket t = Begin();
  if (Flush(t) == DiskOutcome::kFailed) return last_failure_;
  return Status::Ok();
}

Status RequestExecutor::Zero(uint64_t offset, uint64_t length, bool trim, bool fua) {
  if (offset > store_->size() || length > store_->size() - offset) {
    return Status::InvalidArgument("disk zero range outside the store");
  }
  Ticket t = Begin();
  DiskOutcome o = trim ? Trim(t, offset, length, fua) : WriteZeroes(t, offset, length, /*may_punch=*/false, fua);
  if (o == DiskOutcome::kTrimIgnored) o = WriteZeroes(t, offset, length, /*may_punch=*/false, fua);
  if (o == DiskOutcome::kFailed) return last_failure_;
  return Status::Ok();
}

}  // namespace romulus::disk
