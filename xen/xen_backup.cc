#include "xen/xen_backup.h"

#include <fcntl.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <sstream>

namespace romulus::xen {

using Clock = std::chrono::steady_clock;

namespace {

std::map<std::string, std::string> ParseInfo(std::span<const uint8_t> payload) {
  std::map<std::string, std::string> out;
  std::istringstream in(std::string(payload.begin(), payload.end()));
  std::string line;
  while (std::getline(in, line)) {
    auto eq = line.find('=');
    if (eq != std::string::npos) out[line.substr(0, eq)] = line.substr(eq + 1);
  }
  return out;
}

bool ValidName(const std::string& n) {
  if (n.empty() || n.size() > 64) return false;
  for (char c : n)
    if (!(isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')) return false;
  return true;
}

bool ParseUuid(const std::string& s, uint8_t out[16]) {
  std::string hex;
  for (char c : s)
    if (c != '-') hex += c;
  if (hex.size() != 32) return false;
  for (int i = 0; i < 16; i++) {
    unsigned v;
    if (sscanf(hex.c_str() + 2 * i, "%2x", &v) != 1) return false;
    out[i] = uint8_t(v);
  }
  return true;
}

}  // namespace

XenSink::XenSink(const XenRestoreOptions& opts, std::unique_ptr<XenHandles> h)
    : opts_(opts), h_(std::move(h)) {}

XenSink::~XenSink() {
  if (!activated_) {
    StopRestore();
    DestroyDomain();
  }
  if (restore_.joinable()) restore_.join();
  if (out_fd_ >= 0) close(out_fd_);
  if (in_fd_ >= 0) close(in_fd_);
  if (name_lock_fd_ >= 0) close(name_lock_fd_);
}

Status XenSink::ReclaimReplicaName() {
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
  // We own the name: any domain of that name was left by a predecessor that
  // died (killed, crashed) before destroying it. It is paused and was never
  // activated (activation renames it), so it holds nothing anyone runs.
  struct xs_handle* xs = h_->xsh();
  unsigned int num = 0;
  char** ents = xs_directory(xs, XBT_NULL, "/local/domain", &num);
  for (unsigned i = 0; ents && i < num; i++) {
    const std::string dom = std::string("/local/domain/") + ents[i];
    if (XsRead(xs, dom + "/name") != name_) continue;
    const uint32_t old = static_cast<uint32_t>(strtoul(ents[i], nullptr, 10));
    if (old == 0) continue;
    spdlog::warn("a replica domain {} (domid {}) left by a stopped predecessor exists: destroying it", name_, old);
    const std::string vm = XsRead(xs, dom + "/vm");
    if (xc_domain_destroy(h_->xch(), old) != 0) {
      int err = errno;
      free(ents);
      return Status::FromErrno("destroying the leftover replica " + name_ + " (domid " + std::to_string(old) + ")",
                               err);
    }
    xs_rm(xs, XBT_NULL, dom.c_str());
    if (vm.rfind("/vm/", 0) == 0) xs_rm(xs, XBT_NULL, vm.c_str());
  }
  free(ents);
  return Status::Ok();
}

Status XenSink::BeginSession(uint64_t guest_pages, const std::string& identity) {
  if (activated_) return Status::InvalidArgument("the Xen replica was already activated");
  if (created_) {
    // A new primary session starts a new migration stream (new image header):
    // libxenguest cannot continue the old one. Start over with a new replica.
    fprintf(stderr, "romulus: new session from the primary: dropping replica domain %u, restoring anew\n",
            domid_);
    StopRestore();
    DestroyDomain();
    if (restore_.joinable()) restore_.join();
    if (in_fd_ >= 0) close(in_fd_), in_fd_ = -1;
    if (out_fd_ >= 0) close(out_fd_), out_fd_ = -1;
    created_ = false;
    committed_ = 0;
    last_epoch_ = 0;
    restore_checkpoints_ = 0;
    restore_done_ = false;
  }
  guest_pages_ = guest_pages;
  identity_ = identity;
  asm_ = std::make_unique<StreamAssembler>([this](std::span<const uint8_t> b) { return WriteOut(b); });
  return Status::Ok();
}

Status XenSink::OnState(uint64_t epoch, std::span<const uint8_t> record) {
  if (!asm_) return Status::Internal("Xen sink: state before BeginSession");
  if (EnvelopeKindOf(record) == uint8_t(EnvelopeKind::kDomainInfo)) {
    if (created_) return Status::Corruption("Xen sink: a second domain-info record in one session");
    ROMULUS_RETURN_IF_ERROR(CreateDomain(ParseInfo(record.subspan(kEnvelopeHeaderSize))));
    return StartRestore();
  }
  if (!created_) {
    return Status::Corruption("Xen sink: the stream starts without Romulus' domain-info record "
                              "(is the primary replicating a Xen domain?)");
  }
  (void)epoch;
  return asm_->OnState(record);
}

Status XenSink::OnPage(uint64_t epoch, uint64_t pfn, const uint8_t* page) {
  (void)epoch;
  if (!created_ || !asm_) return Status::Corruption("Xen sink: page before the domain-info record");
  return asm_->OnPage(pfn, page);
}

Status XenSink::Commit(uint64_t epoch) {
  if (!created_ || !asm_) return Status::Corruption("Xen sink: commit before the domain-info record");
  ROMULUS_RETURN_IF_ERROR(asm_->Commit());
  ROMULUS_RETURN_IF_ERROR(FlushOut());
  const uint64_t want = committed_ + 1;
  // libxenguest calls its checkpoint callback when it reads the CHECKPOINT
  // record: from then on an EOF restores this epoch. (The first checkpoint's
  // records were applied as they streamed; later ones are buffered and
  // applied right after the callback.)
  std::unique_lock<std::mutex> lock(mu_);
  bool ok = cv_.wait_for(lock, std::chrono::seconds(120),
                         [&] { return restore_checkpoints_ >= want || restore_done_; });
  if (restore_checkpoints_ < want) {
    if (restore_done_) {
      return Status::IoError("xc_domain_restore ended (rc " + std::to_string(restore_rc_) + ", " +
                             strerror(restore_errno_) + ") before taking checkpoint " +
                             std::to_string(epoch) + ": " + h_->RecentErrors());
    }
    if (!ok) return Status::Timeout("libxenguest did not take checkpoint " + std::to_string(epoch) + " in 120 s");
  }
  committed_ = want;
  last_epoch_ = epoch;
  return Status::Ok();
}

void XenSink::Discard() {
  if (asm_) asm_->Discard();
}

Status XenSink::WriteOut(std::span<const uint8_t> b) {
  // Coalesce the many small writes (8-byte headers, 4 KiB pages) into large
  // ones; Commit flushes.
  if (out_buf_.size() + b.size() > (1u << 20)) ROMULUS_RETURN_IF_ERROR(FlushOut());
  if (b.size() >= (1u << 20)) {
    out_buf_.insert(out_buf_.end(), b.begin(), b.end());
    return FlushOut();
  }
  out_buf_.insert(out_buf_.end(), b.begin(), b.end());
  return Status::Ok();
}

Status XenSink::FlushOut() {
  size_t off = 0;
  while (off < out_buf_.size()) {
    ssize_t n = send(out_fd_, out_buf_.data() + off, out_buf_.size() - off, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      out_buf_.clear();
      return Status::FromErrno("writing the rebuilt stream to xc_domain_restore (" + h_->RecentErrors() + ")",
                               err);
    }
    off += size_t(n);
  }
  out_buf_.clear();
  return Status::Ok();
}

int XenSink::CheckpointCb(void* data) {
  auto* self = static_cast<XenSink*>(data);
  std::lock_guard<std::mutex> lock(self->mu_);
  self->restore_checkpoints_++;
  self->cv_.notify_all();
  return XGR_CHECKPOINT_SUCCESS;
}

Status XenSink::CreateDomain(const std::map<std::string, std::string>& info) {
  auto get = [&](const char* k) -> std::string {
    auto it = info.find(k);
    return it == info.end() ? "" : it->second;
  };
  if (get("hvm") == "1") return Status::Unsupported("HVM guests are not supported by the Xen sink yet");
  std::string orig = get("name").empty() ? identity_ : get("name");
  if (!ValidName(orig)) orig = "romulus-replica";
  final_name_ = opts_.final_name.empty() ? orig : opts_.final_name;
  name_ = opts_.domain_name.empty() ? orig + "--incoming" : opts_.domain_name;
  ROMULUS_RETURN_IF_ERROR(ReclaimReplicaName());
  uuid_ = get("uuid");
  if (!ParseUuid(uuid_, handle_)) memset(handle_, 0, sizeof handle_);
  uuid_ = FormatUuid(handle_);
  max_vcpus_ = unsigned(strtoul(get("max_vcpus").c_str(), nullptr, 10));
  max_memkb_ = strtoull(get("max_memkb").c_str(), nullptr, 10);
  target_kb_ = strtoull(get("target_kb").c_str(), nullptr, 10);
  if (max_vcpus_ == 0 || max_vcpus_ > 512) return Status::Corruption("domain info: bad max_vcpus");
  if (max_memkb_ == 0 || max_memkb_ > (1ull << 40)) return Status::Corruption("domain info: bad max_memkb");
  if (target_kb_ == 0 || target_kb_ > max_memkb_) target_kb_ = max_memkb_;
  auto vifs = VifSpecsFromInfo(info);
  if (!vifs.ok()) return vifs.status();
  vifs_ = std::move(*vifs);

  struct xen_domctl_createdomain cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg.ssidref = 0;
  memcpy(cfg.handle, handle_, sizeof handle_);
  cfg.flags = 0;  // PV
  cfg.max_vcpus = max_vcpus_;
  cfg.max_evtchn_port = 1023;
  cfg.max_grant_frames = -1;
  cfg.max_maptrack_frames = -1;
  cfg.grant_opts = XEN_DOMCTL_GRANT_version(1);  // 0 is rejected
  uint32_t domid = 0;                            // Xen chooses
  if (xc_domain_create(h_->xch(), &domid, &cfg) != 0) {
    return Status::FromErrno("xc_domain_create (" + h_->RecentErrors() + ")", errno);
  }
  domid_ = domid;
  created_ = true;  // from here on DestroyDomain cleans up
  if (xc_domain_max_vcpus(h_->xch(), domid_, max_vcpus_) != 0) {
    return Status::FromErrno("xc_domain_max_vcpus", errno);
  }
  // libxl's slack: the guest's balloon driver and the restore need headroom.
  if (xc_domain_setmaxmem(h_->xch(), domid_, max_memkb_ + 1024) != 0) {
    return Status::FromErrno("xc_domain_setmaxmem", errno);
  }
  store_port_ = xc_evtchn_alloc_unbound(h_->xch(), domid_, 0);
  console_port_ = xc_evtchn_alloc_unbound(h_->xch(), domid_, 0);
  if (store_port_ < 0 || console_port_ < 0) return Status::FromErrno("xc_evtchn_alloc_unbound", errno);
  ROMULUS_RETURN_IF_ERROR(WriteXenstoreSkeleton());
  fprintf(stderr, "romulus: created replica domain %s (domid %u, %u vCPU, %llu KiB) for %s\n", name_.c_str(),
          domid_, max_vcpus_, (unsigned long long)max_memkb_, orig.c_str());
  return Status::Ok();
}

// The nodes libxl__domain_make writes for a PV domain, minus devices.
Status XenSink::WriteXenstoreSkeleton() {
  struct xs_handle* xs = h_->xsh();
  const std::string dom = "/local/domain/" + std::to_string(domid_);
  const std::string vm = "/vm/" + uuid_;
  struct xs_permissions ro[2] = {{0, XS_PERM_NONE}, {domid_, XS_PERM_READ}};
  struct xs_permissions rw[1] = {{domid_, XS_PERM_NONE}};
  for (int attempt = 0; attempt < 5; attempt++) {
    xs_transaction_t t = xs_transaction_start(xs);
    if (t == XBT_NULL) return Status::FromErrno("xenstore transaction", errno);
    bool ok = true;
    auto mk = [&](const std::string& p, struct xs_permissions* perms, unsigned n) {
      ok = ok && xs_mkdir(xs, t, p.c_str()) && xs_set_permissions(xs, t, p.c_str(), perms, n);
    };
    auto wr = [&](const std::string& p, const std::string& v) {
      ok = ok && xs_write(xs, t, p.c_str(), v.data(), unsigned(v.size()));
    };
    xs_rm(xs, t, dom.c_str());
    mk(dom, ro, 2);
    mk(vm, ro, 2);
    wr(dom + "/vm", vm);
    wr(dom + "/name", name_);
    wr(dom + "/domid", std::to_string(domid_));
    wr(vm + "/name", name_);
    wr(vm + "/uuid", uuid_);
    for (const char* d : {"control", "data", "drivers", "feature", "attr", "error"}) mk(dom + "/" + d, rw, 1);
    wr(dom + "/control/shutdown", "");
    wr(dom + "/control/sysrq", "");
    mk(dom + "/control/shutdown", rw, 1);
    mk(dom + "/control/sysrq", rw, 1);
    mk(dom + "/device", ro, 2);
    mk(dom + "/memory", ro, 2);
    wr(dom + "/memory/static-max", std::to_string(max_memkb_));
    wr(dom + "/memory/target", std::to_string(target_kb_));
    for (unsigned i = 0; i < max_vcpus_; i++) wr(dom + "/cpu/" + std::to_string(i) + "/availability", "online");
    if (!ok) {
      int err = errno;
      xs_transaction_end(xs, t, true);
      return Status::FromErrno("writing the replica's xenstore skeleton", err);
    }
    if (xs_transaction_end(xs, t, false)) return Status::Ok();
    if (errno != EAGAIN) return Status::FromErrno("committing the replica's xenstore skeleton", errno);
  }
  return Status::IoError("xenstore transaction kept conflicting");
}

Status XenSink::StartRestore() {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return Status::FromErrno("socketpair", errno);
  out_fd_ = sv[0];
  in_fd_ = sv[1];
  int sz = 4 << 20;
  setsockopt(out_fd_, SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
  setsockopt(in_fd_, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
  restore_ = std::thread([this] {
    struct restore_callbacks cb;
    memset(&cb, 0, sizeof cb);
    cb.checkpoint = &XenSink::CheckpointCb;
    cb.data = this;
    unsigned long store_mfn = 0, console_mfn = 0;
    // No receive timeout here: failure detection lives in the engine, which
    // calls Activate; the EOF we then give libxenguest ends the restore.
    int rc = xc_domain_restore(h_->xch(), in_fd_, domid_, unsigned(store_port_), &store_mfn, 0,
                               unsigned(console_port_), &console_mfn, 0, XC_STREAM_REMUS, &cb, -1);
    int err = errno;
    std::lock_guard<std::mutex> lock(mu_);
    restore_done_ = true;
    restore_rc_ = rc;
    restore_errno_ = err;
    store_mfn_ = store_mfn;
    console_mfn_ = console_mfn;
    cv_.notify_all();
  });
  return Status::Ok();
}

void XenSink::StopRestore() {
  if (out_fd_ >= 0) {
    out_buf_.clear();  // whatever is unflushed belongs to an uncommitted epoch
    shutdown(out_fd_, SHUT_WR);
  }
  if (restore_.joinable()) restore_.join();
}

void XenSink::DestroyDomain() {
  if (!created_) return;
  xc_domain_destroy(h_->xch(), domid_);
  std::string dom = "/local/domain/" + std::to_string(domid_);
  xs_rm(h_->xsh(), XBT_NULL, dom.c_str());
  xs_rm(h_->xsh(), XBT_NULL, ("/vm/" + uuid_).c_str());
  created_ = false;
}

Status XenSink::Rename(const std::string& name) {
  std::string dom = "/local/domain/" + std::to_string(domid_);
  ROMULUS_RETURN_IF_ERROR(XsWrite(h_->xsh(), XBT_NULL, dom + "/name", name));
  ROMULUS_RETURN_IF_ERROR(XsWrite(h_->xsh(), XBT_NULL, "/vm/" + uuid_ + "/name", name));
  name_ = name;
  return Status::Ok();
}

Status XenSink::Activate(const std::string& reason) {
  if (activated_) return Status::Ok();
  if (!created_ || committed_ == 0) {
    return Status::InvalidArgument("cannot activate the Xen replica: no checkpoint was committed");
  }
  auto t0 = Clock::now();
  fprintf(stderr, "romulus: failover (%s): activating domain %s from epoch %llu\n", reason.c_str(),
          name_.c_str(), (unsigned long long)last_epoch_);
  // EOF: libxenguest applies the last complete checkpoint (a partial epoch
  // already in its buffer is dropped) and returns.
  StopRestore();
  if (restore_rc_ != 0) {
    return Status::IoError("xc_domain_restore failed at failover (rc " + std::to_string(restore_rc_) + ", " +
                           strerror(restore_errno_) + "): " + h_->RecentErrors());
  }
  struct xs_handle* xs = h_->xsh();
  const std::string dom = "/local/domain/" + std::to_string(domid_);
  ROMULUS_RETURN_IF_ERROR(XsWrite(xs, XBT_NULL, dom + "/store/port", std::to_string(store_port_)));
  ROMULUS_RETURN_IF_ERROR(XsWrite(xs, XBT_NULL, dom + "/store/ring-ref", std::to_string(store_mfn_)));
  ROMULUS_RETURN_IF_ERROR(XsWrite(xs, XBT_NULL, dom + "/console/port", std::to_string(console_port_)));
  ROMULUS_RETURN_IF_ERROR(XsWrite(xs, XBT_NULL, dom + "/console/ring-ref", std::to_string(console_mfn_)));
  ROMULUS_RETURN_IF_ERROR(XsWrite(xs, XBT_NULL, dom + "/console/type", "xenconsoled"));
  ROMULUS_RETURN_IF_ERROR(XsWrite(xs, XBT_NULL, dom + "/console/limit", "1048576"));
  // Without the introduction xenstored ignores the guest's ring and
  // xenconsoled never attaches.
  if (!xs_introduce_domain(xs, domid_, store_mfn_, unsigned(store_port_))) {
    return Status::FromErrno("xs_introduce_domain(" + std::to_string(domid_) + ")", errno);
  }
  CreateVifs();  // before the guest runs: its netfront reconnects on resume
  if (xc_domain_unpause(h_->xch(), domid_) != 0) return Status::FromErrno("xc_domain_unpause", errno);
  activated_ = true;
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
  fprintf(stderr, "romulus: domain %s (domid %u) running from epoch %llu, activation took %lld ms\n",
          name_.c_str(), domid_, (unsigned long long)last_epoch_, (long long)ms);

  // Take the original name once no other domain holds it (the primary is gone).
  if (final_name_ != name_) {
    auto deadline = Clock::now() + opts_.rename_wait;
    for (;;) {
      bool taken = false;
      unsigned int num = 0;
      char** ents = xs_directory(xs, XBT_NULL, "/local/domain", &num);
      for (unsigned i = 0; ents && i < num; i++) {
        if (strtoul(ents[i], nullptr, 10) == domid_) continue;
        if (XsRead(xs, std::string("/local/domain/") + ents[i] + "/name") == final_name_) taken = true;
      }
      free(ents);
      if (!taken) {
        Status s = Rename(final_name_);
        if (s.ok()) fprintf(stderr, "romulus: domain %u renamed to %s\n", domid_, final_name_.c_str());
        return s;
      }
      if (Clock::now() >= deadline) {
        fprintf(stderr, "romulus: warning: a domain named %s still exists; the replica keeps the name %s\n",
                final_name_.c_str(), name_.c_str());
        return Status::Ok();
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  return Status::Ok();
}

// The nodes libxl writes for a PV NIC served by dom0: the frontend directory
// owned by the guest, the backend directory owned by dom0, each readable by
// the other side. netback creates vif<domid>.<devid> when it sees them.
Status XenSink::WriteVifNodes(const VifSpec& v) {
  struct xs_handle* xs = h_->xsh();
  const std::string id = std::to_string(v.devid);
  const std::string fe = "/local/domain/" + std::to_string(domid_) + "/device/vif/" + id;
  const std::string be = "/local/domain/0/backend/vif/" + std::to_string(domid_) + "/" + id;
  struct xs_permissions fe_perms[2] = {{domid_, XS_PERM_NONE}, {0, XS_PERM_READ}};
  struct xs_permissions be_perms[2] = {{0, XS_PERM_NONE}, {domid_, XS_PERM_READ}};
  for (int attempt = 0; attempt < 5; attempt++) {
    xs_transaction_t t = xs_transaction_start(xs);
    if (t == XBT_NULL) return Status::FromErrno("xenstore transaction", errno);
    bool ok = true;
    auto wr = [&](const std::string& p, const std::string& val) {
      ok = ok && xs_write(xs, t, p.c_str(), val.data(), unsigned(val.size()));
    };
    xs_rm(xs, t, be.c_str());
    ok = ok && xs_mkdir(xs, t, be.c_str()) && xs_set_permissions(xs, t, be.c_str(), be_perms, 2);
    ok = ok && xs_mkdir(xs, t, fe.c_str()) && xs_set_permissions(xs, t, fe.c_str(), fe_perms, 2);
    wr(be + "/frontend", fe);
    wr(be + "/frontend-id", std::to_string(domid_));
    wr(be + "/online", "1");
    wr(be + "/state", "1");  // XenbusStateInitialising
    wr(be + "/script", opts_.vif_script);
    wr(be + "/mac", v.mac);
    if (!v.bridge.empty()) wr(be + "/bridge", v.bridge);
    wr(be + "/handle", id);
    wr(be + "/type", "vif");
    wr(fe + "/backend", be);
    wr(fe + "/backend-id", "0");
    wr(fe + "/state", "1");
    wr(fe + "/handle", id);
    wr(fe + "/mac", v.mac);
    if (!ok) {
      int err = errno;
      xs_transaction_end(xs, t, true);
      return Status::FromErrno("writing vif " + id + "'s xenstore nodes", err);
    }
    if (xs_transaction_end(xs, t, false)) return Status::Ok();
    if (errno != EAGAIN) return Status::FromErrno("committing vif " + id + "'s xenstore nodes", errno);
  }
  return Status::IoError("xenstore transaction kept conflicting");
}

// Runs `vif_script online` as libxl would, once netback created the netdev,
// and waits for the script's hotplug-status (netback connects only then).
Status XenSink::RunVifHotplug(const VifSpec& v) {
  const std::string vif = "vif" + std::to_string(domid_) + "." + std::to_string(v.devid);
  const std::string be_rel = "backend/vif/" + std::to_string(domid_) + "/" + std::to_string(v.devid);
  const auto deadline = Clock::now() + std::chrono::seconds(10);
  while (access(("/sys/class/net/" + vif).c_str(), F_OK) != 0) {
    if (Clock::now() >= deadline) return Status::Timeout("netback did not create " + vif + " within 10 s (is xen-netback loaded?)");
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  std::vector<std::string> env = {"vif=" + vif, "XENBUS_PATH=" + be_rel, "XENBUS_TYPE=vif",
                                  "XENBUS_BASE_PATH=backend", "script=" + opts_.vif_script, "type_if=vif",
                                  "PATH=/usr/sbin:/usr/bin:/sbin:/bin"};
  std::vector<char*> envp;
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::string script = opts_.vif_script, arg = "online";
  char* argv[] = {script.data(), arg.data(), nullptr};
  pid_t pid = fork();
  if (pid < 0) return Status::FromErrno("fork", errno);
  if (pid == 0) {
    execve(script.c_str(), argv, envp.data());
    _exit(127);
  }
  int st = 0;
  const auto script_deadline = Clock::now() + std::chrono::seconds(30);
  for (;;) {
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid) break;
    if (r < 0 && errno != EINTR) return Status::FromErrno("waitpid", errno);
    if (Clock::now() >= script_deadline) {
      kill(pid, SIGKILL);
      waitpid(pid, &st, 0);
      return Status::Timeout(opts_.vif_script + " online " + vif + " took more than 30 s");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
    return Status::IoError(opts_.vif_script + " online " + vif + " failed (" +
                           (WIFEXITED(st) ? "exit " + std::to_string(WEXITSTATUS(st)) : std::string("signal")) + ")");
  }
  const std::string hs = "/local/domain/0/" + be_rel + "/hotplug-status";
  while (XsRead(h_->xsh(), hs) != "connected") {
    if (Clock::now() >= deadline + std::chrono::seconds(30)) {
      return Status::Timeout(opts_.vif_script + " did not write hotplug-status=connected for " + vif);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return Status::Ok();
}

void XenSink::CreateVifs() {
  if (vifs_.empty()) return;
  if (!opts_.create_vifs) {
    fprintf(stderr, "romulus: warning: the guest had %zu vif(s); not recreated (--no-vifs): it has no network\n",
            vifs_.size());
    return;
  }
  for (const VifSpec& v : vifs_) {
    Status s = WriteVifNodes(v);
    if (s.ok()) s = RunVifHotplug(v);
    if (s.ok()) {
      fprintf(stderr, "romulus: vif%u.%u (mac %s%s%s) recreated for the activated guest\n", domid_, v.devid,
              v.mac.c_str(), v.bridge.empty() ? "" : ", bridge ", v.bridge.c_str());
    } else {
      fprintf(stderr, "romulus: warning: vif %u (mac %s) of the activated guest: %s\n", v.devid, v.mac.c_str(),
              s.ToString().c_str());
    }
  }
}

std::string ActivatedDomainName(const restore::GuestSink& sink) {
  auto* xs = dynamic_cast<const XenSink*>(&sink);
  return xs && xs->activated() ? xs->domain_name() : "";
}

Result<std::unique_ptr<restore::GuestSink>> CreateXenSink(const XenRestoreOptions& opts) {
  if (!opts.domain_name.empty() && !ValidName(opts.domain_name)) {
    return Status::InvalidArgument("bad --domain-name \"" + opts.domain_name + "\"");
  }
  auto h = XenHandles::Open(opts.verbose);
  if (!h.ok()) return h.status();
  ROMULUS_RETURN_IF_ERROR(CheckVersionMatch((*h)->xch()));
  if (opts.create_vifs && access(opts.vif_script.c_str(), X_OK) != 0) {
    // Said now, not at failover; the guest still fails over, without NICs.
    fprintf(stderr, "romulus: warning: vif hotplug script %s: %s: a guest's network interfaces cannot be "
            "recreated at failover (--vif-script PATH, or --no-vifs)\n", opts.vif_script.c_str(), strerror(errno));
  }
  return std::unique_ptr<restore::GuestSink>(new XenSink(opts, std::move(*h)));
}

}  // namespace romulus::xen
