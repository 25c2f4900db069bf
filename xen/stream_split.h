// The two halves of Romulus' Xen stream path, still without Xen headers:
//
//   primary: StreamParser -> StreamSplitter -> EpochSink (CheckpointSender)
//            every non-page item becomes one STATE blob (xen/stream_v2.h
//            envelope), every page with data one AddPage(pfn, bytes), and
//            every CHECKPOINT record closes the epoch.
//   backup:  GuestSink events -> StreamAssembler -> byte-identical v2 stream
//            (into xc_domain_restore's pipe); Commit() writes the CHECKPOINT
//            record that makes libxenguest take the epoch.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "common/status.h"
#include "xen/stream_v2.h"

namespace romulus::xen {

// What the splitter drives; xen_primary adapts it to CheckpointSender.
class EpochSink {
 public:
  virtual ~EpochSink() = default;
  virtual Status BeginEpoch(uint64_t epoch) = 0;
  virtual Status AddState(std::span<const uint8_t> blob) = 0;
  virtual Status AddPage(uint64_t pfn, const uint8_t* page) = 0;
  virtual Status EndEpoch(uint64_t epoch) = 0;
};

class StreamSplitter : public StreamVisitor {
 public:
  // Epochs are numbered from `first_epoch`; epoch 1 of a REMUS stream holds
  // the headers, the static records and all live-migration iterations.
  explicit StreamSplitter(EpochSink* sink, uint64_t first_epoch = 1);

  Status OnImageHeader(std::span<const uint8_t> hdr) override;
  Status OnDomainHeader(std::span<const uint8_t> hdr) override;
  Status OnRecord(uint32_t type, std::span<const uint8_t> body) override;
  Status OnPageData(std::span<const uint8_t> skeleton) override;
  Status OnPage(uint64_t pfn, const uint8_t* page) override;
  Status OnCheckpoint() override;

  // The epoch being filled (or the next one, between epochs).
  uint64_t epoch() const { return epoch_; }
  bool in_epoch() const { return open_; }
  uint64_t pages_in_epoch() const { return pages_; }

 private:
  Status Open();
  EpochSink* sink_;
  uint64_t epoch_;
  bool open_ = false;
  uint64_t pages_ = 0;
  std::vector<uint8_t> blob_;  // reused envelope buffer
};

// Backup side. Not thread-safe: one receiver thread drives it.
class StreamAssembler {
 public:
  explicit StreamAssembler(ByteWriter out, ParserLimits limits = {});

  // A STATE blob (envelope) of the epoch being received.
  Status OnState(std::span<const uint8_t> blob);
  Status OnPage(uint64_t pfn, const uint8_t* page);
  // The epoch is complete and verified: writes its CHECKPOINT record.
  Status Commit();
  // The epoch was dropped. Bytes of it may already be in the output, so the
  // output cannot be continued: the assembler refuses everything afterwards
  // (the restorer, on EOF, falls back to the last CHECKPOINT written).
  void Discard();

  bool broken() const { return broken_; }
  uint64_t checkpoints() const { return checkpoints_; }
  uint64_t bytes_written() const { return rec_.bytes_written(); }

 private:
  StreamReconstructor rec_;
  bool broken_ = false;
  uint64_t checkpoints_ = 0;
  uint64_t committed_bytes_ = 0;  // output length at the last CHECKPOINT
};

}  // namespace romulus::xen
