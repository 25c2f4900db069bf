#include "xen/stream_split.h"

namespace romulus::xen {

StreamSplitter::StreamSplitter(EpochSink* sink, uint64_t first_epoch) : sink_(sink), epoch_(first_epoch) {}

Status StreamSplitter::Open() {
  if (open_) return Status::Ok();
  open_ = true;
  pages_ = 0;
  return sink_->BeginEpoch(epoch_);
}

Status StreamSplitter::OnImageHeader(std::span<const uint8_t> hdr) {
  ROMULUS_RETURN_IF_ERROR(Open());
  WrapEnvelope(EnvelopeKind::kImageHeader, hdr, &blob_);
  return sink_->AddState(blob_);
}

Status StreamSplitter::OnDomainHeader(std::span<const uint8_t> hdr) {
  ROMULUS_RETURN_IF_ERROR(Open());
  WrapEnvelope(EnvelopeKind::kDomainHeader, hdr, &blob_);
  return sink_->AddState(blob_);
}

Status StreamSplitter::OnRecord(uint32_t type, std::span<const uint8_t> body) {
  ROMULUS_RETURN_IF_ERROR(Open());
  WrapRecord(type, body, &blob_);
  return sink_->AddState(blob_);
}

Status StreamSplitter::OnPageData(std::span<const uint8_t> skeleton) {
  ROMULUS_RETURN_IF_ERROR(Open());
  WrapEnvelope(EnvelopeKind::kSkeleton, skeleton, &blob_);
  return sink_->AddState(blob_);
}

Status StreamSplitter::OnPage(uint64_t pfn, const uint8_t* page) {
  pages_++;
  return sink_->AddPage(pfn, page);
}

Status StreamSplitter::OnCheckpoint() {
  // An empty epoch (CHECKPOINT right after CHECKPOINT) still is an epoch:
  // the backup must see it to stay in step with libxenguest.
  ROMULUS_RETURN_IF_ERROR(Open());
  open_ = false;
  return sink_->EndEpoch(epoch_++);
}

StreamAssembler::StreamAssembler(ByteWriter out, ParserLimits limits) : rec_(std::move(out), limits) {}

Status StreamAssembler::OnState(std::span<const uint8_t> blob) {
  if (broken_) return Status::Internal("Xen stream assembler used after a discarded epoch");
  Status s = DispatchEnvelope(blob, &rec_);
  if (!s.ok()) broken_ = true;
  return s;
}

Status StreamAssembler::OnPage(uint64_t pfn, const uint8_t* page) {
  if (broken_) return Status::Internal("Xen stream assembler used after a discarded epoch");
  Status s = rec_.OnPage(pfn, page);
  if (!s.ok()) broken_ = true;
  return s;
}

Status StreamAssembler::Commit() {
  if (broken_) return Status::Internal("Xen stream assembler used after a discarded epoch");
  if (!rec_.idle()) {
    broken_ = true;
    return Status::Corruption("epoch ends while a PAGE_DATA record still waits for pages");
  }
  Status s = rec_.OnCheckpoint();
  if (!s.ok()) {
    broken_ = true;
    return s;
  }
  checkpoints_++;
  committed_bytes_ = rec_.bytes_written();
  return Status::Ok();
}

void StreamAssembler::Discard() {
  // Nothing of the dropped epoch reached the output: the stream goes on.
  if (rec_.idle() && rec_.bytes_written() == committed_bytes_) return;
  rec_.Reset();
  broken_ = true;
}

}  // namespace romulus::xen
