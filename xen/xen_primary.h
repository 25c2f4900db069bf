// The primary's Xen backend: drives xc_domain_save(XC_STREAM_REMUS) with our
// callbacks and taps its migration-v2 output into a CheckpointSender.
//
//   xc_domain_save ──pipe──▶ reader thread ──StagingQueue──▶ worker thread
//   (callbacks:                (read() into         (StreamParser ->
//    suspend/postcopy/          reused 1 MiB         StreamSplitter ->
//    checkpoint)                blocks: memcpy       CheckpointSender, which
//                               speed only)          may block on the network)
//
// The reader never touches the network, so the guest's suspended window
// (libxenguest writes the dirty pages while the guest is suspended) costs a
// memcpy of the dirty set, not a network transfer. The entry point is
// RunReplicateDomain in xen/xen_cli.h.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "common/status.h"
#include "replicator/checkpoint_sender.h"
#include "replicator/output_commit.h"
#include "xen/xen_cli.h"

namespace romulus::xen {

// What the primary session sends epochs through. CheckpointSender in
// production (adapter in xen_cli.cc); the lab tool (xen/tool_main.cc) has a
// bare socket transport so the Xen path can be proven on its own.
class EpochTransport {
 public:
  virtual ~EpochTransport() = default;
  virtual Status BeginEpoch(uint64_t epoch) = 0;
  virtual Status AddState(std::span<const uint8_t> blob) = 0;
  virtual Status AddPage(uint64_t pfn, const uint8_t* page) = 0;
  virtual Result<replicator::EpochWireStats> EndEpoch() = 0;
  // timeout may be CheckpointSender::kWhileAlive (no budget while the backup
  // is alive); `cancel` (may be null) ends such a wait.
  virtual Status WaitAck(uint64_t epoch, std::chrono::milliseconds timeout,
                         const std::atomic<bool>* cancel = nullptr) = 0;
  virtual Status Stop() = 0;  // clean stop: the backup must not fail over
  // Planned switchover: BYE "handover", the backup activates from the last
  // acked epoch.
  virtual Status Handover() { return Status::Unsupported("this transport cannot hand over"); }
  // Live cache resize (CheckpointSender::ResizeCache); transports without a
  // page cache cannot.
  virtual bool CanResizeCache() const { return false; }
  virtual uint64_t BackupMaxCachePages() const { return 0; }
  virtual Status ResizeCache(uint64_t cache_pages, std::unique_ptr<compress::PageCache> fresh) {
    (void)cache_pages, (void)fresh;
    return Status::Unsupported("this transport has no page cache");
  }
};

using TransportFactory =
    std::function<Result<std::unique_ptr<EpochTransport>>(const replicator::GuestInfo&)>;

// RunReplicateDomain with any transport.
Status RunReplicateDomainWith(const XenReplicateOptions& opts, const TransportFactory& connect,
                              replicator::OutputCommit* output, const std::atomic<bool>* stop,
                              ReplicateSummary* summary);

// Bounded pool of reusable byte blocks between a producer (the pipe reader)
// and a consumer (the encoder). Blocks are allocated on first need, up to
// max_blocks, and then recycled: no allocation in steady state. Xen-free.
class StagingQueue {
 public:
  struct Block {
    std::unique_ptr<uint8_t[]> data;
    size_t len = 0;
  };
  StagingQueue(size_t block_bytes, size_t max_blocks);

  size_t block_bytes() const { return block_bytes_; }
  // A free block; blocks while all are in use. nullptr once aborted.
  Block* GetFree();
  void PushFull(Block* b);
  // The next full block in order; nullptr at end of input (after Close) or abort.
  Block* PopFull();
  void Recycle(Block* b);
  void Close();  // producer: no more blocks
  void Abort();  // both sides: stop now

  size_t allocated_blocks() const;
  size_t high_water_blocks() const;  // most blocks full at once

 private:
  const size_t block_bytes_, max_blocks_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<Block>> all_;
  std::vector<Block*> free_;
  std::deque<Block*> full_;
  bool closed_ = false, aborted_ = false;
  size_t high_water_ = 0;
};

}  // namespace romulus::xen
