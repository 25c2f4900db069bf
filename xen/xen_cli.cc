// RunReplicateDomain: the production transport is the engine's CheckpointSender.
// Kept apart from xen_primary.cc so that tools linking only the Xen path (the
// lab tool) do not pull in the engine.
#include "xen/xen_cli.h"

#include "xen/xen_primary.h"

namespace romulus::xen {
namespace {

class SenderTransport final : public EpochTransport {
 public:
  explicit SenderTransport(std::unique_ptr<replicator::CheckpointSender> s) : s_(std::move(s)) {}
  Status BeginEpoch(uint64_t epoch) override { return s_->BeginEpoch(epoch); }
  Status AddState(std::span<const uint8_t> blob) override { return s_->AddState(blob); }
  Status AddPage(uint64_t pfn, const uint8_t* page) override { return s_->AddPage(pfn, page); }
  Result<replicator::EpochWireStats> EndEpoch() override { return s_->EndEpoch(); }
  Status WaitAck(uint64_t epoch, std::chrono::milliseconds timeout, const std::atomic<bool>* cancel) override {
    return s_->WaitAck(epoch, timeout, cancel);
  }
  Status Stop() override { return s_->Stop(); }
  Status Handover() override { return s_->Stop(protocol::ByeReason::kHandover); }
  bool CanResizeCache() const override { return s_->can_resize_cache(); }
  uint64_t BackupMaxCachePages() const override { return s_->backup_max_cache_pages(); }
  Status ResizeCache(uint64_t cache_pages, std::unique_ptr<compress::PageCache> fresh) override {
    return s_->ResizeCache(cache_pages, std::move(fresh));
  }

 private:
  std::unique_ptr<replicator::CheckpointSender> s_;
};

}  // namespace

Status RunReplicateDomain(const XenReplicateOptions& opts, const SenderFactory& connect,
                          replicator::OutputCommit* output, const std::atomic<bool>* stop,
                          ReplicateSummary* summary) {
  TransportFactory factory = [&](const replicator::GuestInfo& gi) -> Result<std::unique_ptr<EpochTransport>> {
    auto s = connect(gi);
    if (!s.ok()) return s.status();
    return std::unique_ptr<EpochTransport>(new SenderTransport(std::move(*s)));
  };
  return RunReplicateDomainWith(opts, factory, output, stop, summary);
}

}  // namespace romulus::xen
