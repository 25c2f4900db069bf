#include "xen/xen_backup.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <sstream>

#include "common/little_endian.h"
#include "protocol/messages.h"
#include "xen/incoming_device_model.h"

namespace romulus::xen {

using Clock = std::chrono::steady_clock;

namespace {

bool ValidName(const std::string& n) {
  if (n.empty() || n.size() > 64) return false;
  for (char c : n)
    if (!(isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')) return false;
  return true;
}

}  // namespace

Status XenSink::CheckHostCanRestore(GuestType type, ReplicaSpec* spec) const {
  auto caps = GetHostCaps(h_->xch());
  if (!caps.ok()) return caps.status();
  if (!caps->hvm) {
    return Status::Unsupported(std::string("this host cannot run ") + GuestTypeName(type) +
                               " guests (no hardware virtualisation: xl info virt_caps has no hvm)");
  }
  if (spec->hap && !caps->hap) {
    if (!caps->shadow) return Status::Unsupported("this host has neither HAP nor shadow paging for a PVH guest");
    spdlog::warn("the primary runs the guest with HAP, this host has none: the replica uses shadow paging");
    spec->hap = false;
  }
  if (!spec->hap && !caps->shadow) {
    // The primary ran the guest on shadow paging, which this host lacks.
    if (!caps->hap) return Status::Unsupported("this host has neither HAP nor shadow paging for a PVH guest");
    spdlog::warn("the primary runs the guest with shadow paging, this host has none: the replica uses HAP");
    spec->hap = true;
  }
  if (type == GuestType::kHvm) {
    // Said when the primary connects, not at failover: a replica whose
    // devices cannot be started is no checkpoint.
    if (access(opts_.device_model.c_str(), X_OK) != 0) {
      return Status::Unsupported("this backup cannot resume an HVM guest: no device model at " + opts_.device_model +
                                 " (" + strerror(errno) + "; Debian: apt install qemu-system-xen, or restore "
                                 "--device-model PATH)");
    }
    if (access(opts_.device_model_log_dir.c_str(), W_OK | X_OK) != 0) {
      return Status::Unsupported("this backup cannot resume an HVM guest: its device model's log directory " +
                                 opts_.device_model_log_dir + " is not writable (" + strerror(errno) + ")");
    }
    if (spec->device_model) {
      // An older QEMU here cannot load the primary's device state: refused
      // now rather than at failover. A binary that does not say its
      // release (a wrapper) is only a warning.
      auto mine = DeviceModelBinaryVersion(opts_.device_model);
      if (!mine.ok()) {
        spdlog::warn("cannot tell the release of the device model {} ({}): not compared with the primary's QEMU {}",
                     opts_.device_model, mine.status().ToString(),
                     spec->device_model->qemu.known() ? spec->device_model->qemu.ToString() : "(unknown)");
      } else {
        ROMULUS_RETURN_IF_ERROR(devicemodel::CheckDeviceModelVersions(spec->device_model->qemu,
                                                                      spec->device_model->platform_pci, *mine)
                                    .With("this backup cannot resume an HVM guest"));
      }
    }
    if (spec->device_model) {
      // QEMU here gives each emulated IDE disk this backup's copy: the disk
      // must be one the session replicates.
      std::vector<std::string> vdevs;
      for (const auto& img : disks_.images()) vdevs.push_back(img.name);
      ROMULUS_RETURN_IF_ERROR(devicemodel::CheckEmulatedDisks(*spec->device_model, vdevs)
                                  .With("this backup cannot resume an HVM guest"));
    }
    if (spec->device_model && !spec->device_model->kernel.empty()) {
      auto kernel = devicemodel::AllowedGuestKernel(spec->device_model->kernel, opts_.guest_kernel_dirs);
      if (!kernel.ok()) return kernel.status().With("this backup cannot resume an HVM guest");
      spec->device_model->kernel = *kernel;
    }
  }
  return Status::Ok();
}

XenSink::XenSink(const XenRestoreOptions& opts, std::unique_ptr<XenHandles> h, uint32_t xen_release)
    : opts_(opts), h_(std::move(h)), xen_release_(xen_release), disks_(XenDiskOptions{opts.disk_dir, opts.max_disk_staging, opts.max_disk_spill}) {}

XenSink::~XenSink() {
  // A replica never activated is destroyed by its destructor (EOF, wait,
  // destroy); the activated one is left running.
  cur_.reset();
  held_.reset();
  if (name_lock_fd_ >= 0) close(name_lock_fd_);
}

Status XenSink::LockReplicaName() {
  if (name_lock_fd_ < 0) {
    ::mkdir("/run/lock", 0755);  // a minimal dom0 may not have it yet
    const std::string path = "/run/lock/romulus-" + name_ + ".lock";
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) return Status::FromErrno("replica name lock " + path, errno);
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      int err = errno;
      ::close(fd);
      if (err == EWOULDBLOCK) {
        return Status::InvalidArgument("another romulus restore --xen on this host owns the replica name " + name_ +
                                       " (lock " + path + "); give this one another --domain-name");
      }
      return Status::FromErrno("locking " + path, err);
    }
    name_lock_fd_ = fd;
  }
  return Status::Ok();
}

Status XenSink::ReclaimReplicaName() {
  ROMULUS_RETURN_IF_ERROR(LockReplicaName());
  // We own the name (and the held name derived from it): any domain of
  // either name that is not ours was left by a predecessor that died
  // (killed, crashed) before destroying it. Destroyed only if it is paused
  // and was never activated: an activated replica may keep the name (its
  // predecessor was killed before the rename, or the original name stayed
  // taken), and it may be the only running copy of the guest.
  struct xs_handle* xs = h_->xsh();
  unsigned int num = 0;
  char** ents = xs_directory(xs, XBT_NULL, "/local/domain", &num);
  for (unsigned i = 0; ents && i < num; i++) {
    const std::string dom = std::string("/local/domain/") + ents[i];
    const std::string name = XsRead(xs, dom + "/name");
    if (name != name_ && name != held_name_) continue;
    const uint32_t old = static_cast<uint32_t>(strtoul(ents[i], nullptr, 10));
    if (old == 0) continue;
    if ((cur_ && cur_->created() && cur_->domid() == old) || (held_ && held_->created() && held_->domid() == old)) {
      continue;  // ours
    }
    auto info = GetDomainInfo(h_->xch(), old);
    const bool activated = !XsRead(xs, XenReplica::ActivatedMarkPath(old)).empty();
    if (activated || !info.ok() || !info->paused) {
      free(ents);
      return Status::InvalidArgument(
          "a domain named " + name + " (domid " + std::to_string(old) + ") exists and " +
          (activated ? std::string("was activated by an earlier backup")
                     : !info.ok() ? "cannot be inspected (" + info.status().ToString() + ")"
                                  : std::string("is not paused")) +
          ": it may run the guest, so it is not destroyed; rename or destroy it by hand, or give this backup "
          "another --domain-name");
    }
    spdlog::warn("a replica domain {} (domid {}) left by a stopped predecessor exists: destroying it", name, old);
    const std::string vm = XsRead(xs, dom + "/vm");
    // An HVM replica's predecessor may have died while activating it: its
    // device model goes first, as libxl's does before the domain.
    StopLeftoverDeviceModel(h_.get(), old);
    if (xc_domain_destroy(h_->xch(), old) != 0) {
      int err = errno;
      free(ents);
      return Status::FromErrno("destroying the leftover replica " + name + " (domid " + std::to_string(old) + ")",
                               err);
    }
    xs_rm(xs, XBT_NULL, dom.c_str());
    if (vm.rfind("/vm/", 0) == 0) xs_rm(xs, XBT_NULL, vm.c_str());
  }
  free(ents);
  return Status::Ok();
}

void XenSink::DropCurrent(const char* why) {
  if (!cur_) return;
  if (cur_->created()) {
    spdlog::info("{}: destroying replica domain {} (domid {})", why, cur_->name(),
            cur_->domid());
  }
  cur_.reset();  // EOF, wait for libxenguest, destroy
}

void XenSink::DropHeld(const char* why) {
  if (!held_) return;
  spdlog::info("{}: destroying the held replica {} (domid {}, epoch {})", why,
          held_->name(), held_->domid(), held_epoch_.load());
  has_held_ = false;
  held_.reset();
  held_epoch_ = 0;
}

Status XenSink::BeginSession(uint64_t guest_pages, const std::string& identity) {
  return BeginSessionWithDisks(guest_pages, identity, {});
}

Status XenSink::BeginSessionWithDisks(uint64_t guest_pages, const std::string& identity,
                                      std::span<const protocol::DiskInfo> disks) {
  if (activated_) return Status::InvalidArgument("the Xen replica was already activated");
  // The disks first: a refusal (no --disk-dir, a bad name, other disks than
  // the checkpoint's) leaves the replicas as they are. A checkpoint that
  // exists now (committed here and kept below as the held replica, or held
  // already) stays the one to activate until this session commits: so its
  // images are kept, and the new session's first epoch (a full copy) is
  // staged and applied only at that first commit, not written as it comes.
  if (!disks.empty() && name_.empty()) {
    FixNames(ValidName(identity) ? identity : "romulus-replica");
  }
  if (!disks.empty()) ROMULUS_RETURN_IF_ERROR(LockReplicaName());
  // Whether the checkpoint kept below has disks: asked before the disks
  // switch to the new session's list.
  const bool checkpoint_has_disks = !disks_.images().empty();
  ROMULUS_RETURN_IF_ERROR(disks_.BeginSession(name_, disks, has_committed()));
  if (cur_) {
    // A new primary session starts a new migration stream (new image
    // header): libxenguest cannot continue the old one, a new replica must
    // be built. Its first epoch is a whole-memory sync (seconds to minutes);
    // until it commits, the old replica is the only checkpoint there is.
    if (committed_ > 0 && disks_partial_) {
      // Its disks were still being copied: no checkpoint to keep.
      DropCurrent("new session from the primary: the replica's disks were never copied whole");
    } else if (committed_ > 0) {
      const uint64_t epoch = last_epoch_;
      // EOF: libxenguest applies the last complete checkpoint and returns;
      // the paused domain then holds exactly epoch N.
      Status fin = FinishReplica(cur_.get(), epoch, checkpoint_has_disks);
      // A held replica is dropped by the first commit of a session, so none
      // can exist here; if one did, a completed current replica is newer
      // (and a failed one leaves the held one as the newest checkpoint).
      if (fin.ok()) DropHeld("a newer checkpoint exists");
      if (!fin.ok()) {
        spdlog::error("the replica of epoch {} could not be completed ({}); {}", epoch, fin.ToString(),
                      held_ ? "the held replica stays the newest checkpoint"
                            : "no checkpoint is left until the new session commits");
        DropCurrent("its restore failed");
      } else {
        // Renamed so the new replica can take NAME--incoming. A failed
        // rename only costs a name: the checkpoint is kept all the same.
        Status rn = cur_->Rename(held_name_);
        if (!rn.ok()) spdlog::warn("renaming the held replica: {}", rn.ToString());
        spdlog::info("new session from the primary: keeping replica domain {} as the held replica {} (epoch {}) until the new session commits", cur_->domid(), cur_->name(),
                epoch);
        held_epoch_ = epoch;  // before committed_ drops: has_committed() never blinks
        has_held_ = true;
        held_ = std::move(cur_);
      }
    } else {
      DropCurrent("new session from the primary: the replica being built committed nothing");
      if (held_) {
        spdlog::info("keeping the held replica {} (epoch {}): still the newest checkpoint",
                held_->name(), held_epoch_.load());
      }
    }
  }
  committed_ = 0;
  disks_partial_ = false;
  last_epoch_ = 0;
  guest_pages_ = guest_pages;
  identity_ = identity;
  asm_ = std::make_unique<StreamAssembler>([this](std::span<const uint8_t> b) {
    return cur_ ? cur_->Write(b) : Status::Internal("Xen sink: stream bytes before the replica exists");
  });
  return Status::Ok();
}

Status XenSink::OnState(uint64_t epoch, std::span<const uint8_t> record) {
  if (!asm_) return Status::Internal("Xen sink: state before BeginSession");
  if (EnvelopeKindOf(record) == uint8_t(EnvelopeKind::kDomainInfo)) {
    if (cur_) return Status::Corruption("Xen sink: a second domain-info record in one session");
    ROMULUS_RETURN_IF_ERROR(CreateReplica(ParseDomainInfo(record.subspan(kEnvelopeHeaderSize))));
    Status st = cur_->StartRestore();
    if (!st.ok()) DropCurrent("its restore did not start");
    return st;
  }
  if (!cur_) {
    return Status::Corruption("Xen sink: the stream starts without Romulus' domain-info record "
                              "(is the primary replicating a Xen domain?)");
  }
  if (EnvelopeKindOf(record) == uint8_t(EnvelopeKind::kDeviceModelState)) {
    // Not part of libxenguest's stream: kept beside it, committed with it.
    return cur_->StageDeviceState(epoch, record.subspan(kEnvelopeHeaderSize));
  }
  if (EnvelopeKindOf(record) == uint8_t(EnvelopeKind::kDomainHeader) &&
      record.size() >= kEnvelopeHeaderSize + kDomainHeaderSize) {
    // libxenguest restores with the ops of the *target* domain's type and
    // fails deep inside on a stream of the other type: say it here.
    const uint32_t stream_type = LoadLE32(record.data() + kEnvelopeHeaderSize);
    const uint32_t want = cur_->type() == GuestType::kPv ? kDomainTypeX86Pv : kDomainTypeX86Hvm;
    if (stream_type != want) {
      return Status::Corruption("the migration stream is of domain type " + std::to_string(stream_type) +
                                " but the domain info says a " + GuestTypeName(cur_->type()) +
                                " guest (type " + std::to_string(want) + ")");
    }
  }
  return asm_->OnState(record);
}

Status XenSink::OnPage(uint64_t epoch, uint64_t pfn, const uint8_t* page) {
  (void)epoch;
  if (!cur_ || !asm_) return Status::Corruption("Xen sink: page before the domain-info record");
  return asm_->OnPage(pfn, page);
}

Status XenSink::Commit(uint64_t epoch) { return CommitEpoch(epoch, /*disks_partial=*/false); }

Status XenSink::CommitEpoch(uint64_t epoch, bool disks_partial) {
  if (!cur_ || !asm_) return Status::Corruption("Xen sink: commit before the domain-info record");
  // Memory first, then the disks (docs/DISK.md §6): the disk records of N
  // are applied only once libxenguest took memory N, so a failed memory
  // commit leaves the images at the previous checkpoint; a failed disk
  // apply after it is reported, and the sink refuses to activate from then.
  bool memory_taken = false;
  Status st = CommitMemoryThenDisks(
      epoch,
      [&]() -> Status {
        // An HVM checkpoint is its memory and its devices, or nothing.
        if (cur_->type() == GuestType::kHvm && !cur_->HasStagedDeviceState(epoch)) {
          return Status::Corruption("HVM epoch " + std::to_string(epoch) + " without its device model's state");
        }
        ROMULUS_RETURN_IF_ERROR(asm_->Commit());
        ROMULUS_RETURN_IF_ERROR(cur_->Flush());
        ROMULUS_RETURN_IF_ERROR(cur_->WaitCheckpoint(committed_ + 1, epoch));
        cur_->CheckpointCommitted();
        last_epoch_ = epoch;  // before committed_: a reader never sees the count without its epoch
        // Before committed_ too: a partial epoch never shows as a checkpoint.
        if (disks_partial) disks_partial_ = true;
        committed_ = committed_ + 1;
        if (!disks_partial && disks_partial_.exchange(false)) {
          spdlog::info("epoch {}: the disks' copy is complete: the replica holds a checkpoint from now on", epoch);
        }
        memory_taken = true;
        return Status::Ok();
      },
      &disks_, /*whole=*/!disks_partial);
  // The new session's replica holds a checkpoint now, newer than the held
  // one. (After a failed disk apply the held replica's images are partly
  // overwritten too: it could not be activated either.)
  if (memory_taken && held_ && !disks_partial) {
    const std::string why = "the new session committed epoch " + std::to_string(epoch);
    DropHeld(why.c_str());
  }
  return st;
}

Status XenSink::CommitIncomplete(uint64_t epoch) {
  if (held_ || (committed_ > 0 && !disks_partial_)) {
    // A partial disk copy must never overwrite a checkpoint.
    Discard();
    return Status::Corruption("Xen sink: epoch " + std::to_string(epoch) +
                              " leaves a disk partial, but this backup holds a checkpoint");
  }
  return CommitEpoch(epoch, /*disks_partial=*/true);
}

Status XenSink::OnDisk(uint64_t epoch, uint32_t disk_id, const protocol::DiskRecord& record) {
  if (!asm_) return Status::Internal("Xen sink: disk record before BeginSession");
  return disks_.OnDisk(epoch, disk_id, record);
}

void XenSink::Discard() {
  if (asm_) asm_->Discard();
  if (cur_) cur_->DiscardDeviceState();
  disks_.Discard();
}

Status XenSink::CheckFreeMemory(uint64_t need_kb) const {
  xc_physinfo_t info;
  memset(&info, 0, sizeof info);
  if (xc_physinfo(h_->xch(), &info) != 0) return Status::Ok();  // cannot tell: the restore will say
  const uint64_t pages = info.free_pages > info.outstanding_pages ? info.free_pages - info.outstanding_pages : 0;
  const uint64_t free_kb = pages * (XC_PAGE_SIZE / 1024);
  if (free_kb >= need_kb) return Status::Ok();
  std::string m = "not enough free hypervisor memory for a replica of the guest: it needs " +
                  std::to_string(need_kb / 1024) + " MiB, " + std::to_string(free_kb / 1024) + " MiB are free";
  if (held_) {
    m += "; a resync needs room for two copies of the guest, and the held replica " + held_->name() + " (epoch " +
         std::to_string(held_epoch_.load()) + ") is kept: it is this backup's only checkpoint";
  }
  return Status::Storage(m);
}

void XenSink::FixNames(const std::string& orig) {
  final_name_ = opts_.final_name.empty() ? orig : opts_.final_name;
  name_ = opts_.domain_name.empty() ? orig + "--incoming" : opts_.domain_name;
  held_name_ = (opts_.domain_name.empty() ? orig : opts_.domain_name) + "--held";
}

Status XenSink::CreateReplica(const std::map<std::string, std::string>& info) {
  auto get = [&](const char* k) -> std::string {
    auto it = info.find(k);
    return it == info.end() ? "" : it->second;
  };
  auto parsed = ReplicaSpecFromInfo(info);
  if (!parsed.ok()) return parsed.status();
  ReplicaSpec spec = std::move(*parsed);
  std::string orig = get("name").empty() ? identity_ : get("name");
  if (!ValidName(orig)) orig = "romulus-replica";
  if (name_.empty()) {
    // Fixed by the first session: the lock and the held replica's name
    // follow from it.
    FixNames(orig);
  }
  ROMULUS_RETURN_IF_ERROR(ReclaimReplicaName());
  spec.name = name_;
  if (spec.type != GuestType::kPv) ROMULUS_RETURN_IF_ERROR(CheckHostCanRestore(spec.type, &spec));
  // The restore populates the guest's pages as they stream in: check now
  // that they fit, rather than fail deep in libxenguest mid-sync.
  ROMULUS_RETURN_IF_ERROR(CheckFreeMemory(ReplicaMemoryKb(spec)));

  cur_ = std::make_unique<XenReplica>(h_.get(), opts_);
  Status st = cur_->Create(spec);
  if (!st.ok()) {
    cur_.reset();
    return st;
  }
  spdlog::info("created replica domain {} (domid {}, {}{}, {} vCPU, {} KiB) for {}", name_, cur_->domid(),
               GuestTypeName(spec.type), spec.type == GuestType::kPv ? "" : (spec.hap ? " hap" : " shadow"),
               spec.max_vcpus, spec.max_memkb, orig);
  return Status::Ok();
}

Status XenSink::Activate(const std::string& reason) {
  if (activated_) return Status::Ok();
  XenReplica* r = nullptr;
  uint64_t epoch = 0;
  if (cur_ && committed_ > 0) {
    r = cur_.get();
    epoch = last_epoch_;
  } else if (held_) {
    r = held_.get();
    epoch = held_epoch_;
  } else {
    return Status::InvalidArgument("cannot activate the Xen replica: no checkpoint was committed");
  }
  if (r == cur_.get() && disks_partial_) {
    return Status::InvalidArgument("cannot activate the Xen replica " + r->name() + " (epoch " +
                                   std::to_string(epoch) +
                                   "): its disks are still being copied, so it holds no checkpoint to resume");
  }
  // The open epoch's disk records are never applied; the images are the
  // checkpoint's disks, unless applying one failed.
  disks_.Discard();
  if (const std::string why = disks_.activation_refusal(); !why.empty()) {
    return Status::Storage("cannot activate the Xen replica " + r->name() + " (epoch " + std::to_string(epoch) +
                           "): " + why);
  }
  // The guest will write its images from now on: they stop being any
  // front end's content as of a tag (DISK.md §7.2). Durably, before it runs.
  if (Status v = disks_.VoidClaims(); !v.ok()) {
    return Status::Storage("cannot activate the Xen replica " + r->name() + " (epoch " + std::to_string(epoch) +
                           "): " + v.message());
  }
  auto t0 = Clock::now();
  spdlog::info("failover ({}): activating domain {} from epoch {}{}", reason,
          r->name(), epoch,
          r == held_.get() ? " (the held replica: the new session had committed nothing)" : "");
  const bool from_held = r == held_.get();
  if (from_held) DropCurrent("failover to the held replica: the new session's replica is half-built");
  // EOF (done already for a held replica): libxenguest applies the last
  // complete checkpoint (a partial epoch in its buffer is dropped) and returns.
  if (Status fin = FinishReplica(r, epoch, !disks_.images().empty()); !fin.ok()) {
    // The domain can never run: no checkpoint is held any more, and the
    // backup must say so rather than hold one (has_committed() false).
    spdlog::error("the replica of epoch {} cannot run: {}", epoch, fin.ToString());
    if (from_held) {
      DropHeld("its restore failed");
    } else {
      DropCurrent("its restore failed");
      committed_ = 0;
    }
    return fin.With("activating the Xen replica of epoch " + std::to_string(epoch) + ": no checkpoint is left");
  }
  if (!from_held) DropHeld("failover to a newer checkpoint");
  // Back to the replica name, as any activated replica has until it takes
  // the original name (xenconsoled names the log after it at activation);
  // a failed activation gives the held one its name back, so that a new
  // session's replica can take NAME--incoming.
  if (from_held) {
    Status rn = held_->Rename(name_);
    if (!rn.ok()) spdlog::warn("renaming the held replica: {}", rn.ToString());
  }
  Status st = ResumeReplica(r);
  if (!st.ok() && from_held && held_ && !held_->activated()) {
    Status rn = held_->Rename(held_name_);
    if (!rn.ok()) spdlog::warn("renaming the held replica back to {}: {}", held_name_, rn.ToString());
  }
  ROMULUS_RETURN_IF_ERROR(st);
  activated_name_ = r->name();
  activated_ = true;
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
  spdlog::info("domain {} (domid {}) running from epoch {}, activation took {} ms",
          r->name(), r->domid(), epoch, ms);
  // The guest runs: from here on nothing may report the activation as
  // failed (the backup would hold and say "not running" beside a running
  // guest). A name that cannot be taken is only a warning.
  if (Status s = r->TakeName(final_name_); !s.ok()) {
    spdlog::warn("domain {} runs, but taking the name {} failed: {}", r->name(), final_name_, s.ToString());
  }
  activated_name_ = r->name();
  return Status::Ok();
}

Status XenSink::FinishReplica(XenReplica* r, uint64_t epoch, bool has_disks) {
  ROMULUS_RETURN_IF_ERROR(r->Finish());
  const uint64_t applied = r->checkpoints_applied(), committed = r->checkpoints_committed();
  ROMULUS_RETURN_IF_ERROR(CheckReplicaEpochs(r->type(), has_disks, applied, committed, epoch));
  if (applied > committed) {
    spdlog::warn("replica {}: libxenguest took {} checkpoint(s) after epoch {}, the last committed (a commit gave "
                 "up waiting for it): the domain holds the next epoch's memory, whose output the primary never "
                 "released; a guest without disks or devices resumes from it",
                 r->name(), applied - committed, epoch);
  }
  return Status::Ok();
}

Status XenSink::ResumeReplica(XenReplica* r) {
  std::vector<VbdDevice> vbds;
  for (const XenDiskImage& im : disks_.images()) {
    VbdDevice v;
    v.vdev = im.name;
    v.devid = im.devid;
    v.params = im.path;
    vbds.push_back(std::move(v));
  }
  return r->Resume(vbds);
}

std::string ActivatedDomainName(const restore::GuestSink& sink) {
  auto* xs = dynamic_cast<const XenSink*>(&sink);
  return xs && xs->activated() ? xs->domain_name() : "";
}

bool ActivatedWithDisks(const restore::GuestSink& sink) {
  auto* xs = dynamic_cast<const XenSink*>(&sink);
  return xs && xs->activated() && xs->has_disks();
}

Result<std::unique_ptr<restore::GuestSink>> CreateXenSink(const XenRestoreOptions& opts) {
  if (!opts.domain_name.empty() && !ValidName(opts.domain_name)) {
    return Status::InvalidArgument("bad --domain-name \"" + opts.domain_name + "\"");
  }
  if (!opts.disk_dir.empty()) {
    // Said now, not when the primary connects: the images live there.
    struct stat st;
    if (::stat(opts.disk_dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
      return Status::InvalidArgument("--disk-dir " + opts.disk_dir + ": not a directory");
    }
    if (access(opts.disk_dir.c_str(), W_OK | X_OK) != 0) {
      return Status::InvalidArgument("--disk-dir " + opts.disk_dir + ": " + strerror(errno) +
                                     " (the disk images are created there)");
    }
  }
  auto h = XenHandles::Open(opts.verbose);
  if (!h.ok()) return h.status();
  ROMULUS_RETURN_IF_ERROR(CheckVersionMatch((*h)->xch()));
  auto release = HypervisorRelease((*h)->xch());
  if (!release.ok()) return release.status();
  if (opts.create_vifs && access(opts.vif_script.c_str(), X_OK) != 0) {
    // Said now, not at failover; the guest still fails over, without NICs.
    spdlog::warn("vif hotplug script {}: {}: a guest's network interfaces cannot be recreated at failover (--vif-script PATH, or --no-vifs)", opts.vif_script, strerror(errno));
  }
  return std::unique_ptr<restore::GuestSink>(new XenSink(opts, std::move(*h), *release));
}

}  // namespace romulus::xen
