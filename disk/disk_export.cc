#include "disk/disk_export.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>

#include <spdlog/spdlog.h>

#include "common/random_id.h"
#include "common/thread_name.h"
#include "disk/export_socket.h"
#include "disk/tap_wire.h"

namespace romulus::disk {
namespace {

// Connections served at once (both sockets): the legitimate peers are one
// kernel client and one replicator; beyond this, a connection is closed at once.
constexpr size_t kMaxConnections = 16;

}  // namespace

DiskExport::DiskExport(DiskExportOptions options) : options_(std::move(options)) {}

Result<std::unique_ptr<DiskExport>> DiskExport::Open(DiskExportOptions options) {
  if (!tap::IsCleanName(options.name)) {
    return Status::InvalidArgument("export name '" + options.name + "' must be 1.." + std::to_string(tap::kMaxName) +
                                   " characters of [A-Za-z0-9._-]");
  }
  if (options.budget_bytes < protocol::kMaxDiskWriteChunk) {
    return Status::InvalidArgument("the log budget must be at least 1 MiB");
  }
  if (options.nbd_socket == options.tap_socket) {
    return Status::InvalidArgument("the NBD socket and the tap socket must be different paths");
  }
  // Sockets first (cheap, and the usual operator mistake), then the store.
  ROMULUS_RETURN_IF_ERROR(CheckUnixSocketPath(options.nbd_socket, "NBD socket"));
  ROMULUS_RETURN_IF_ERROR(CheckUnixSocketPath(options.tap_socket, "tap socket"));
  options.nbd.export_name = options.name;
  std::unique_ptr<DiskExport> e(new DiskExport(std::move(options)));
  const DiskExportOptions& o = e->options_;
  e->instance_id_ = RandomNonZeroId();  // also the disk's lineage (DISK.md §7.2)

  auto store = BackingStore::Open(o.store_path, o.store);
  if (!store.ok()) return store.status();
  e->store_ = std::move(*store);
  if (e->store_->size() == 0 || e->store_->size() % 512 != 0) {
    return Status::InvalidArgument("disk " + o.store_path + " is " + std::to_string(e->store_->size()) +
                                   " bytes, not a non-zero multiple of 512");
  }
  // The full copy reads through a store of its own: the front end's bounce
  // buffer may still hold a READ's data being sent when the copy runs.
  BackingStoreOptions copy = o.store;
  copy.read_only = true;
  copy.max_request = protocol::kMaxDiskWriteChunk;
  auto copy_store = BackingStore::Open(o.store_path, copy);
  if (!copy_store.ok()) return copy_store.status().With("opening the full copy's reader");
  e->copy_store_ = std::move(*copy_store);

  EpochDiskLogOptions lo;
  lo.budget_bytes = o.budget_bytes;
  e->log_ = std::make_unique<EpochDiskLog>(0, e->store_.get(), lo);
  // What each tag wrote, kept while no replicator is attached too, so a
  // backup that holds the disk as of a tag gets only what changed since
  // (DISK.md §7.2): before the front end serves its first request.
  e->log_->TrackChanges(e->store_->size());
  e->gate_ = std::make_unique<LoggingGate>(e->log_.get(), e->log_.get());
  auto nbd = NbdServer::Create(e->store_.get(), &e->clock_, e->gate_.get(), o.nbd);
  if (!nbd.ok()) return nbd.status();
  e->nbd_ = std::move(*nbd);
  TapTarget t;
  t.nbd = e->nbd_.get();
  t.copy_store = e->copy_store_.get();
  t.clock = &e->clock_;
  t.log = e->log_.get();
  t.gate = e->gate_.get();
  t.instance_id = e->instance_id_;
  t.log_budget = o.budget_bytes;
  t.name = o.name;
  auto tap = TapServer::Create(std::move(t), o.tap);
  if (!tap.ok()) return tap.status();
  e->tap_ = std::move(*tap);

  e->wake_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (e->wake_fd_ < 0) return Status::FromErrno("eventfd", errno);
  auto nl = ListenUnix(o.nbd_socket, "NBD socket");
  if (!nl.ok()) return nl.status();
  e->nbd_listen_ = *nl;
  auto tl = ListenUnix(o.tap_socket, "tap socket");
  if (!tl.ok()) return tl.status();  // the destructor removes the NBD socket
  e->tap_listen_ = *tl;
  return e;
}

DiskExport::~DiskExport() {
  Stop();
  if (nbd_listen_ >= 0) {
    ::close(nbd_listen_);
    ::unlink(options_.nbd_socket.c_str());
  }
  if (tap_listen_ >= 0) {
    ::close(tap_listen_);
    ::unlink(options_.tap_socket.c_str());
  }
  if (wake_fd_ >= 0) ::close(wake_fd_);
}

Status DiskExport::Start() {
  if (accept_thread_.joinable()) return Status::InvalidArgument("disk export started twice");
  spdlog::info("disk export '{}': {} ({} bytes, {}), NBD socket {}, tap socket {}, log budget {} bytes",
               options_.name, options_.store_path, store_->size(), store_->io_mode(), options_.nbd_socket,
               options_.tap_socket, options_.budget_bytes);
  accept_thread_ = std::thread([this] {
    NameThisThread("export-accept");
    AcceptLoop();
  });
  return Status::Ok();
}

void DiskExport::Stop() {
  if (stopping_.exchange(true)) {
    if (accept_thread_.joinable()) accept_thread_.join();
    return;
  }
  if (wake_fd_ >= 0) {
    uint64_t one = 1;
    (void)!::write(wake_fd_, &one, sizeof one);
  }
  if (nbd_) nbd_->Stop();
  if (tap_) tap_->Stop();
  if (accept_thread_.joinable()) accept_thread_.join();
  Reap(true);
}

void DiskExport::Reap(bool all) {
  std::list<std::unique_ptr<Conn>> finished;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = conns_.begin(); it != conns_.end();) {
      if (all || (*it)->done.load()) {
        finished.push_back(std::move(*it));
        it = conns_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto& c : finished) c->thread.join();
}

void DiskExport::Spawn(int fd, bool nbd) {
  Reap(false);
  std::lock_guard<std::mutex> lock(mu_);
  if (conns_.size() >= kMaxConnections) {
    ++refused_connections_;
    spdlog::warn("disk export '{}': {} connections already; closing a new {} connection", options_.name,
                 conns_.size(), nbd ? "NBD" : "tap");
    ::close(fd);
    return;
  }
  if (nbd) {
    ++nbd_connections_;
  } else {
    ++tap_connections_;
  }
  auto c = std::make_unique<Conn>();
  Conn* raw = c.get();
  c->thread = std::thread([this, fd, nbd, raw] {
    NameThisThread(nbd ? "export-nbd" : "export-tap");
    if (nbd) {
      const std::string peer = PeerName(fd);
      Status cred = CheckPeer(fd, "NBD socket of export '" + options_.name + "'");
      if (!cred.ok()) {
        spdlog::warn("disk export '{}': {}", options_.name, cred.message());
        ::close(fd);
      } else {
        spdlog::info("disk export '{}': NBD client connected ({})", options_.name, peer);
        Status st = nbd_->Serve(fd);
        if (st.ok() || st.code() == Code::kClosed) {
          spdlog::info("disk export '{}': NBD client ({}) gone: {}", options_.name, peer,
                       st.ok() ? "disconnected" : st.message());
        } else {
          spdlog::warn("disk export '{}': NBD client ({}) dropped: {}", options_.name, peer, st.ToString());
        }
      }
    } else {
      (void)tap_->Serve(fd);  // logs its own outcome
    }
    raw->done.store(true);
  });
  conns_.push_back(std::move(c));
}

void DiskExport::AcceptLoop() {
  while (!stopping_.load()) {
    pollfd fds[3] = {{nbd_listen_, POLLIN, 0}, {tap_listen_, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
    int n = ::poll(fds, 3, 1000);
    if (n < 0) {
      if (errno == EINTR) continue;
      spdlog::error("disk export '{}': poll: {}", options_.name, std::strerror(errno));
      return;
    }
    if (stopping_.load() || (fds[2].revents & POLLIN)) return;
    for (int i = 0; i < 2; ++i) {
      if (!(fds[i].revents & POLLIN)) continue;
      int fd = ::accept4(fds[i].fd, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno != EINTR && errno != EAGAIN && errno != ECONNABORTED) {
          spdlog::warn("disk export '{}': accept: {}", options_.name, std::strerror(errno));
        }
        continue;
      }
      Spawn(fd, i == 0);
    }
    Reap(false);
  }
}

DiskExportStats DiskExport::stats() const {
  DiskExportStats s;
  s.nbd = nbd_->stats();
  s.tap = tap_->stats();
  s.log = log_->stats();
  std::lock_guard<std::mutex> lock(mu_);
  s.nbd_connections = nbd_connections_;
  s.tap_connections = tap_connections_;
  s.refused_connections = refused_connections_;
  return s;
}

}  // namespace romulus::disk
