// Listener: one acceptor thread per listening socket, polling the socket,
// a wake-up eventfd and every pending TLS handshake, so that no single peer
// (or 200 of them) can keep the real primary waiting.
//
// When max_pending handshakes are already in progress, a new connection
// evicts the OLDEST pending one rather than being refused. Refusing the
// newcomer would let an attacker hold every slot with max_pending idle
// connections renewed every handshake_timeout (a trickle), and the real
// primary, a newcomer, would be refused for as long as that goes on.
// Evicting the oldest means a flood must open max_pending new connections
// within the primary's handshake time to push it out: a rate, not a count.
// And in PSK mode even that does not work: a handshake whose ClientHello
// proved the key (its PSK binder verified, which takes the key) is never
// evicted while an unproven one is pending, and the primary's ClientHello
// arrives with its TCP handshake's last ACK, so it is proven on its first
// step. Only its own deadline, or other key holders, can displace it.
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

#include <spdlog/spdlog.h>

#include "common/thread_annotations.h"
#include "common/thread_name.h"
#include "transport/drop_log.h"
#include "transport/io_util.h"
#include "transport/tcp.h"
#include "transport/tcp_stream.h"

namespace romulus::transport {

using internal::TlsHandshake;

namespace {

// After accept(2) fails for lack of descriptors or memory, wait this long
// before trying again (the socket stays readable: polling it would spin).
constexpr std::chrono::milliseconds kAcceptBackoff{100};

struct Pending {
  std::unique_ptr<TlsHandshake> hs;
  std::string peer;
  Deadline deadline;
  short events = POLLIN;
};

}  // namespace

struct Listener::State {
  State(int fd, int wake, std::shared_ptr<const SecurityContext> s, ListenerOptions o)
      : listen_fd(fd), wake_fd(wake), sec(std::move(s)), opts(o), drops(o.log_interval) {}
  ~State() {
    if (listen_fd >= 0) ::close(listen_fd);
    if (wake_fd >= 0) ::close(wake_fd);
  }

  void Run();
  void Stop();
  bool AcceptBurst(Clock::time_point now);
  void Admit(int fd, Clock::time_point now);
  void Advance(Pending& p, Clock::time_point now);
  void Drop(const std::string& peer, const Status& why, Clock::time_point now);
  void PushReady(std::unique_ptr<Stream> stream);
  int PollTimeout(Clock::time_point now, Clock::time_point resume_accept) const;

  const int listen_fd;
  const int wake_fd;  // eventfd: tells the acceptor to stop
  const std::shared_ptr<const SecurityContext> sec;
  const ListenerOptions opts;
  std::thread acceptor;

  mutable std::mutex mu;
  std::condition_variable cv;
  std::deque<std::unique_ptr<Stream>> ready GUARDED_BY(mu);
  bool shut GUARDED_BY(mu) = false;
  Status failure GUARDED_BY(mu);  // the acceptor died of this
  ListenerStats stats GUARDED_BY(mu);

  // Acceptor thread only. Oldest first.
  std::vector<Pending> pending;
  internal::DropLog drops;
};

void Listener::State::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu);
    shut = true;
    ready.clear();
  }
  cv.notify_all();
  uint64_t one = 1;
  (void)!::write(wake_fd, &one, sizeof one);
}

void Listener::State::Drop(const std::string& peer, const Status& why, Clock::time_point now) {
  {
    std::lock_guard<std::mutex> lock(mu);
    ++stats.dropped;
    stats.last_drop = Status::Error(why.code(), peer + ": " + why.message());
  }
  if (auto line = drops.Record(now, peer, why.message())) spdlog::warn("{}", *line);
}

void Listener::State::PushReady(std::unique_ptr<Stream> stream) {
  std::string peer = stream->Peer();
  std::unique_ptr<Stream> old;
  {
    std::lock_guard<std::mutex> lock(mu);
    if (shut) return;
    ++stats.authenticated;
    if (ready.size() >= opts.max_ready) {
      old = std::move(ready.front());
      ready.pop_front();
      ++stats.ready_dropped;
    }
    ready.push_back(std::move(stream));
    stats.ready = ready.size();
  }
  cv.notify_one();
  spdlog::debug("connection from {} ready", peer);
  // Only key holders get this far, so this is rare enough to log every time.
  if (old) spdlog::warn("closed {}: it was not taken up before {} newer connections", old->Peer(), opts.max_ready);
}

void Listener::State::Advance(Pending& p, Clock::time_point now) {
  auto events = p.hs->Step();
  if (!events.ok()) {
    const Status& st = events.status();
    Drop(p.peer, Status::Error(st.code(), st.message() + internal::HandshakeHint(st, *sec)), now);
    p.hs.reset();  // closes the socket
    return;
  }
  if (*events != 0) {
    p.events = *events;
    return;
  }
  PushReady(p.hs->Release());
  p.hs.reset();
}

void Listener::State::Admit(int fd, Clock::time_point now) {
  std::string peer = internal::PeerAddress(fd);
  {
    std::lock_guard<std::mutex> lock(mu);
    ++stats.accepted;
  }
  if (Status st = internal::TuneTcpSocket(fd); !st.ok()) {
    ::close(fd);
    Drop(peer, st, now);
    return;
  }
  if (!sec->tls()) {  // no transport handshake: the session layer vets the peer
    PushReady(internal::NewTcpStream(fd, peer));
    return;
  }
  if (pending.size() >= opts.max_pending) {
    auto it = std::find_if(pending.begin(), pending.end(),
                           [](const Pending& p) { return !p.hs->KeyProven(); });
    if (it == pending.end()) it = pending.begin();  // all hold the key: oldest
    std::string victim = it->peer;
    pending.erase(it);  // closes its socket
    {
      std::lock_guard<std::mutex> lock(mu);
      ++stats.evicted;
    }
    Drop(victim, Status::Unauthenticated("evicted: " + std::to_string(opts.max_pending) +
                                         " handshakes were pending and a newer connection arrived"),
         now);
  }
  auto hs = internal::StartTls(fd, peer, *sec, /*server=*/true);
  if (!hs.ok()) {
    Drop(peer, hs.status(), now);
    return;
  }
  pending.push_back(Pending{std::move(*hs), peer, now + opts.handshake_timeout, POLLIN});
  Advance(pending.back(), now);
  if (!pending.back().hs) pending.pop_back();
  std::lock_guard<std::mutex> lock(mu);
  stats.pending = pending.size();
  stats.pending_high_water = std::max(stats.pending_high_water, pending.size());
}

// Accepts what the backlog holds, at most max_pending at a time so pending
// handshakes are served between bursts. False if accept(2) is out of
// resources and should rest for a while.
bool Listener::State::AcceptBurst(Clock::time_point now) {
  for (size_t n = 0; n < std::max<size_t>(opts.max_pending, 1); ++n) {
    int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      Admit(fd, now);
      continue;
    }
    if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return true;
    if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
      Drop("(not accepted)", Status::FromErrno("accept", errno), now);
      return false;
    }
    Status st = Status::FromErrno("accept on the listening socket", errno);
    spdlog::error("{}", st.ToString());
    {
      std::lock_guard<std::mutex> lock(mu);
      failure = st;
    }
    cv.notify_all();
    return false;
  }
  return true;
}

int Listener::State::PollTimeout(Clock::time_point now, Clock::time_point resume_accept) const {
  Clock::time_point next = drops.NextFlush();
  for (const Pending& p : pending) next = std::min(next, p.deadline);
  if (resume_accept > now) next = std::min(next, resume_accept);
  if (next == Clock::time_point::max()) return -1;
  return PollTimeoutMs(next);
}

void Listener::State::Run() {
  Clock::time_point resume_accept{};  // accept(2) rests until then after EMFILE
  std::vector<pollfd> fds;
  for (;;) {
    Clock::time_point now = Clock::now();
    bool accepting = now >= resume_accept;
    {
      std::lock_guard<std::mutex> lock(mu);
      if (!failure.ok()) accepting = false;
    }
    fds.clear();
    fds.push_back({wake_fd, POLLIN, 0});
    fds.push_back({accepting ? listen_fd : -1, POLLIN, 0});  // fd -1: ignored by poll
    for (const Pending& p : pending) fds.push_back({p.hs->fd(), p.events, 0});
    int r = ::poll(fds.data(), fds.size(), PollTimeout(now, resume_accept));
    if (r < 0 && errno != EINTR) {
      spdlog::error("listener poll failed: {}", std::strerror(errno));
      std::this_thread::sleep_for(kAcceptBackoff);  // never spin; Stop still ends the loop
    }
    if (r > 0 && (fds[0].revents & POLLIN)) break;
    now = Clock::now();
    // Serve the pending handshakes (fds[2..] match pending[0..]), then expire.
    for (size_t i = 0; r > 0 && i < pending.size(); ++i) {
      if (fds[i + 2].revents) Advance(pending[i], now);
    }
    for (Pending& p : pending) {
      if (p.hs && now >= p.deadline) {
        Drop(p.peer,
             Status::Timeout("no TLS handshake within " + std::to_string(opts.handshake_timeout.count()) + " ms"),
             now);
        p.hs.reset();
      }
    }
    std::erase_if(pending, [](const Pending& p) { return !p.hs; });
    if (r > 0 && (fds[1].revents & POLLIN) && !AcceptBurst(now)) resume_accept = now + kAcceptBackoff;
    if (auto line = drops.Flush(now)) spdlog::warn("{}", *line);
    std::lock_guard<std::mutex> lock(mu);
    stats.pending = pending.size();
  }
  pending.clear();
  std::lock_guard<std::mutex> lock(mu);
  stats.pending = 0;
}

// ---- Listener -----------------------------------------------------------------

Listener::Listener(std::unique_ptr<State> state, uint16_t port, std::string addr)
    : state_(std::move(state)), port_(port), addr_(std::move(addr)) {}

Listener::~Listener() {
  state_->Stop();
  if (state_->acceptor.joinable()) state_->acceptor.join();
}

void Listener::Shutdown() { state_->Stop(); }

ListenerStats Listener::stats() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->stats;
}

Result<std::unique_ptr<Stream>> Listener::Accept(Deadline deadline) {
  State& s = *state_;
  std::unique_lock<std::mutex> lock(s.mu);
  auto done = [&]() REQUIRES(s.mu) { return s.shut || !s.ready.empty() || !s.failure.ok(); };
  if (deadline == NoDeadline()) {
    s.cv.wait(lock, done);
  } else {
    s.cv.wait_until(lock, deadline, done);
  }
  if (s.shut) return Status::Closed("listener shut down");
  if (!s.ready.empty()) {
    std::unique_ptr<Stream> stream = std::move(s.ready.front());
    s.ready.pop_front();
    s.stats.ready = s.ready.size();
    return stream;
  }
  if (!s.failure.ok()) return s.failure;
  return Status::Timeout("timed out waiting for a connection");
}

namespace {

Status CheckOptions(const ListenerOptions& o) {
  if (o.handshake_timeout.count() <= 0) return Status::InvalidArgument("handshake timeout must be positive");
  if (o.max_pending == 0) return Status::InvalidArgument("max_pending must be at least 1");
  if (o.max_ready == 0) return Status::InvalidArgument("max_ready must be at least 1");
  if (o.log_interval.count() <= 0) return Status::InvalidArgument("log interval must be positive");
  return Status::Ok();
}

// A listening, non-blocking socket on the first address that binds.
Result<int> BindSocket(const std::string& addr, uint16_t port, int backlog) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  std::string port_text = std::to_string(port);
  const char* node = addr.empty() || addr == "*" ? nullptr : addr.c_str();
  int gai = ::getaddrinfo(node, port_text.c_str(), &hints, &res);
  if (gai != 0) return Status::InvalidArgument("cannot resolve '" + addr + "': " + ::gai_strerror(gai));
  Status last = Status::IoError("no address to bind for '" + addr + "'");
  for (addrinfo* ai = res; ai; ai = ai->ai_next) {
    int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
      last = Status::FromErrno("socket", errno);
      continue;
    }
    int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    std::string where = internal::SockaddrToString(ai->ai_addr, ai->ai_addrlen);
    if (::bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || ::listen(fd, backlog) < 0) {
      last = Status::FromErrno("binding " + where, errno);
      ::close(fd);
      continue;
    }
    ::freeaddrinfo(res);
    return fd;
  }
  ::freeaddrinfo(res);
  return last;
}

}  // namespace

Result<std::unique_ptr<Listener>> Listener::Bind(const std::string& addr, uint16_t port,
                                                 std::shared_ptr<const SecurityContext> sec,
                                                 ListenerOptions options) {
  if (!sec) return Status::InvalidArgument("Listener without a security context");
  ROMULUS_RETURN_IF_ERROR(CheckOptions(options));
  auto fd = BindSocket(addr, port, options.backlog);
  if (!fd.ok()) return fd.status();
  int wake = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake < 0) {
    int err = errno;
    ::close(*fd);
    return Status::FromErrno("eventfd", err);
  }
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  ::getsockname(*fd, reinterpret_cast<sockaddr*>(&ss), &len);
  uint16_t bound = 0;
  if (ss.ss_family == AF_INET) bound = ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  if (ss.ss_family == AF_INET6) bound = ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
  std::string name = internal::SockaddrToString(reinterpret_cast<sockaddr*>(&ss), len);
  auto state = std::make_unique<State>(*fd, wake, std::move(sec), options);
  try {
    state->acceptor = std::thread([s = state.get()] {
      NameThisThread("tls-accept");
      s->Run();
    });
  } catch (const std::system_error& e) {
    return Status::IoError(std::string("cannot start the listener thread: ") + e.what());
  }
  return std::unique_ptr<Listener>(new Listener(std::move(state), bound, name));
}

}  // namespace romulus::transport
