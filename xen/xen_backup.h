// The backup's Xen sink: a PV domain created with libxenctrl (route (a) of
// LAB-NOTES: no libxl framing to fake), restored continuously by
// xc_domain_restore(XC_STREAM_REMUS) from the byte-identical v2 stream that
// StreamAssembler rebuilds from the engine's events.
//
//   OnState/OnPage -> StreamAssembler -> socketpair -> restore thread
//   Commit(N)      -> writes CHECKPOINT, returns once libxenguest's
//                     checkpoint callback saw it (epoch N is libxenguest's)
//   Activate       -> EOF: libxenguest applies the last complete checkpoint,
//                     then store/console wiring, xs_introduce_domain,
//                     rename, unpause
//
// Created through CreateXenSink (xen/xen_cli.h).
#pragma once

#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "restore/guest_sink.h"
#include "xen/stream_split.h"
#include "xen/vif_spec.h"
#include "xen/xen_cli.h"
#include "xen/xen_env.h"

namespace romulus::xen {

class XenSink final : public restore::GuestSink {
 public:
  XenSink(const XenRestoreOptions& opts, std::unique_ptr<XenHandles> h);
  ~XenSink() override;

  Status BeginSession(uint64_t guest_pages, const std::string& identity) override;
  Status OnPage(uint64_t epoch, uint64_t pfn, const uint8_t* page) override;
  Status OnState(uint64_t epoch, std::span<const uint8_t> record) override;
  Status Commit(uint64_t epoch) override;
  void Discard() override;
  Status Activate(const std::string& reason) override;
  bool has_committed() const override { return committed_ > 0; }
  uint64_t last_committed_epoch() const override { return last_epoch_; }

  uint32_t domid() const { return domid_; }
  bool activated() const { return activated_; }
  const std::string& domain_name() const { return name_; }

 private:
  Status CreateDomain(const std::map<std::string, std::string>& info);
  Status WriteXenstoreSkeleton();
  Status StartRestore();
  Status WriteOut(std::span<const uint8_t> b);
  Status FlushOut();
  void StopRestore();    // EOF to libxenguest, wait for it
  void DestroyDomain();  // a replica we will never activate
  Status Rename(const std::string& name);
  // Before creating the replica: take the replica name's lock file (another
  // live `restore --xen` with the same name refuses), then destroy any
  // domain of that name a killed predecessor left behind.
  Status ReclaimReplicaName();
  // The primary's NICs on the activated domain; failures only warn (a
  // running guest without a NIC beats no guest).
  void CreateVifs();
  Status WriteVifNodes(const VifSpec& v);
  Status RunVifHotplug(const VifSpec& v);
  static int CheckpointCb(void* data);

  XenRestoreOptions opts_;
  std::unique_ptr<XenHandles> h_;
  std::unique_ptr<StreamAssembler> asm_;
  std::string identity_;
  uint64_t guest_pages_ = 0;

  // The domain.
  uint32_t domid_ = 0;
  bool created_ = false, activated_ = false;
  std::string name_, final_name_, uuid_;
  uint8_t handle_[16] = {};
  unsigned max_vcpus_ = 1;
  uint64_t max_memkb_ = 0, target_kb_ = 0;
  std::vector<VifSpec> vifs_;  // from the domain info
  int store_port_ = -1, console_port_ = -1;

  // The restore thread and its input.
  int out_fd_ = -1, in_fd_ = -1;
  int name_lock_fd_ = -1;  // flock on /run/lock/romulus-NAME.lock while we own the name
  std::vector<uint8_t> out_buf_;
  std::thread restore_;
  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t restore_checkpoints_ = 0;  // CHECKPOINT records libxenguest took
  bool restore_done_ = false;
  int restore_rc_ = 0;
  int restore_errno_ = 0;
  unsigned long store_mfn_ = 0, console_mfn_ = 0;

  uint64_t committed_ = 0;      // checkpoints committed in this stream
  uint64_t last_epoch_ = 0;
};

}  // namespace romulus::xen
