// TLS 1.3 stream over a non-blocking TCP socket, usable by one reader and
// one writer thread at once.
//
// Design: the SSL object talks to two memory BIOs, never to the socket, and
// all socket I/O happens outside the SSL lock:
//   reader: recv() -> [ssl_mu_] BIO_write(rbio) + SSL_read -> caller
//   writer: [send_mu_] { [ssl_mu_] SSL_write + drain wbio -> tx_ } send(tx_)
// so an SSL call never blocks, a writer stalled on a full socket never holds
// the lock the reader needs (acks keep flowing while an epoch is written),
// and WANT_READ/WANT_WRITE cross-talk between threads cannot deadlock.
// Bytes SSL produces while reading (none expected: no tickets, no
// renegotiation) stay in wbio and leave, in order, with the next write.
// Encrypting up to 256 KiB per lock hold keeps syscalls per 8 MiB frame at
// ~32 instead of one per 16 KiB record.
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <mutex>
#include <vector>

#include <spdlog/spdlog.h>

#include "common/thread_annotations.h"
#include "transport/io_util.h"
#include "transport/tcp_stream.h"
#include "transport/tls_context.h"

namespace romulus::transport::internal {
namespace {

constexpr size_t kRecvChunk = 64 * 1024;
constexpr size_t kEncryptChunk = 256 * 1024;

std::string DrainOpenSslErrors() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? "no OpenSSL error detail" : out;
}

class TlsStream final : public Stream {
 public:
  TlsStream(int fd, std::string peer, SSL* ssl, BIO* rbio, BIO* wbio)
      : fd_(fd), peer_(std::move(peer)), ssl_(ssl), rbio_(rbio), wbio_(wbio) {
    rx_.resize(kRecvChunk);
    SSL_set_app_data(ssl_, &note_);  // the PSK callback explains a key mismatch here
  }
  ~TlsStream() override { Close(); }

  // Single-threaded, before the stream is handed out. Advances the
  // handshake as far as it can without blocking: 0 when it is complete,
  // POLLIN/POLLOUT for what to wait on, or why it failed. A failure's alert
  // is flushed first (best effort) so the peer learns why.
  // Outside the lock analysis: no other thread can see the stream yet, so
  // tx_ is used without send_mu_.
  Result<short> HandshakeStep() NO_THREAD_SAFETY_ANALYSIS {
    for (;;) {
      if (!tx_.empty()) {
        auto n = SendOnce(fd_, tx_.data(), tx_.size());
        if (!n.ok()) return hs_error_.ok() ? n.status() : hs_error_;
        tx_.erase(tx_.begin(), tx_.begin() + static_cast<std::ptrdiff_t>(*n));
        if (!tx_.empty()) return static_cast<short>(POLLOUT);
      }
      if (!hs_error_.ok()) return hs_error_;
      if (hs_done_) return static_cast<short>(0);
      ERR_clear_error();
      int r = SSL_do_handshake(ssl_);
      int err = r == 1 ? SSL_ERROR_NONE : SSL_get_error(ssl_, r);
      std::string detail = err == SSL_ERROR_SSL ? DrainOpenSslErrors() : "";
      Drain();
      if (r == 1) {
        // In PSK mode the session must have been keyed by our PSK: never
        // accept a handshake that fell back to anything else.
        if (psk_mode_ && !SSL_session_reused(ssl_)) {
          hs_error_ = Status::Unauthenticated("TLS handshake completed without the pre-shared key");
        } else {
          hs_done_ = true;
        }
        continue;  // flush the last flight
      }
      if (err != SSL_ERROR_WANT_READ) {
        hs_error_ = HandshakeError(err, detail);
        continue;
      }
      if (!tx_.empty()) continue;  // our flight goes out before we wait for theirs
      auto got = RecvOnceIntoBio();
      if (!got.ok()) {
        if (got.status().code() == Code::kClosed) {
          return Status::Unauthenticated("peer closed the connection during the TLS handshake");
        }
        return got.status();
      }
      if (!*got) return static_cast<short>(POLLIN);
    }
  }

  int fd() const { return fd_; }

  // PSK mode, during the handshake: the peer's ClientHello carried a valid
  // binder for our key, i.e. the peer holds the key (a stranger cannot make
  // OpenSSL accept the PSK).
  bool KeyProven() {
    if (!psk_mode_) return false;
    std::lock_guard<std::mutex> lock(ssl_mu_);
    return SSL_session_reused(ssl_) == 1;
  }

  void set_psk_mode(bool on) { psk_mode_ = on; }

  Status WriteAll(std::span<const uint8_t> data, Deadline deadline) override {
    const std::span<const uint8_t> parts[1] = {data};
    return WriteAllV(parts, deadline);
  }

  // Encrypts the parts in order and sends the ciphertext in batches of about
  // kEncryptChunk, so a frame header and its payload share one send().
  Status WriteAllV(std::span<const std::span<const uint8_t>> parts, Deadline deadline) override {
    std::lock_guard<std::mutex> send_lock(send_mu_);
    if (!write_status_.ok()) return write_status_;
    for (auto part : parts) {
      size_t off = 0;
      while (off < part.size()) {
        size_t chunk = std::min(kEncryptChunk, part.size() - off);
        {
          std::lock_guard<std::mutex> lock(ssl_mu_);
          if (shut_.load()) return Fail(Status::Closed("stream shut down locally"));
          ERR_clear_error();
          size_t written = 0;
          // A memory BIO accepts everything: SSL_write_ex cannot want I/O.
          if (SSL_write_ex(ssl_, part.data() + off, chunk, &written) != 1 || written != chunk) {
            return Fail(Status::IoError("TLS write to " + peer_ + " failed: " + DrainOpenSslErrors()));
          }
          DrainLocked();
        }
        off += chunk;
        if (tx_.size() >= kEncryptChunk) ROMULUS_RETURN_IF_ERROR(SendTx(deadline));
      }
    }
    return SendTx(deadline);
  }

  Result<size_t> ReadSome(std::span<uint8_t> out, Deadline deadline) override {
    if (out.empty()) return size_t{0};
    for (;;) {
      {
        std::lock_guard<std::mutex> lock(ssl_mu_);
        ERR_clear_error();
        size_t n = 0;
        int r = SSL_read_ex(ssl_, out.data(), out.size(), &n);
        if (r == 1) return n;
        int err = SSL_get_error(ssl_, r);
        if (err == SSL_ERROR_ZERO_RETURN) return Status::Closed("peer closed the TLS session");
        if (err != SSL_ERROR_WANT_READ) {
          if (shut_.load()) return Status::Closed("stream shut down locally");
          return Status::Corruption("TLS read from " + peer_ + " failed: " + DrainOpenSslErrors());
        }
      }
      if (eof_) {
        return shut_.load() ? Status::Closed("stream shut down locally")
                            : Status::Closed("peer closed the connection (no TLS close_notify)");
      }
      Status st = RecvIntoBio(deadline, "waiting for data");
      if (st.code() == Code::kClosed) {
        eof_ = true;  // let SSL_read consume what is buffered, then report EOF
        continue;
      }
      ROMULUS_RETURN_IF_ERROR(st);
    }
  }

  void Shutdown() override {
    if (shut_.exchange(true)) return;
    // close_notify only if no writer is mid-frame (it would corrupt the
    // record stream) and without waiting on the socket.
    if (send_mu_.try_lock()) {
      {
        std::lock_guard<std::mutex> lock(ssl_mu_);
        ERR_clear_error();
        SSL_shutdown(ssl_);
        ERR_clear_error();
        DrainLocked();
      }
      if (!tx_.empty()) (void)SendOnce(fd_, tx_.data(), tx_.size());
      tx_.clear();
      send_mu_.unlock();
    }
    if (fd_ >= 0) ::shutdown(fd_, SHUT_RDWR);
  }

  // close_notify, then FIN; SSL_read keeps working (TLS 1.3 half-close).
  void ShutdownWrite() override {
    std::lock_guard<std::mutex> send_lock(send_mu_);
    if (shut_.load() || !write_status_.ok()) return;
    {
      std::lock_guard<std::mutex> lock(ssl_mu_);
      ERR_clear_error();
      SSL_shutdown(ssl_);
      ERR_clear_error();
      DrainLocked();
    }
    if (!SendTx(DeadlineIn(std::chrono::milliseconds(1000))).ok()) return;
    if (fd_ >= 0) ::shutdown(fd_, SHUT_WR);
  }

  void Close() override {
    if (ssl_) SSL_free(ssl_);  // frees both BIOs
    ssl_ = nullptr;
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

  std::string Peer() const override { return peer_; }

 private:
  Status Fail(Status st) REQUIRES(send_mu_) {
    write_status_ = st;
    return st;
  }
  // Sends tx_.
  Status SendTx(Deadline deadline) REQUIRES(send_mu_) {
    if (tx_.empty()) return Status::Ok();
    Status st = SendAll(fd_, tx_.data(), tx_.size(), -1, deadline);
    tx_.clear();
    if (!st.ok()) {
      if (shut_.load()) st = Status::Closed("stream shut down locally");
      return Fail(st);
    }
    return Status::Ok();
  }
  // Handshake only (HandshakeStep): send_mu_ is not needed yet.
  void Drain() NO_THREAD_SAFETY_ANALYSIS {
    std::lock_guard<std::mutex> lock(ssl_mu_);
    DrainLocked();
  }
  // Appends everything SSL has produced to tx_. Holding both (send_mu_
  // only after the handshake) is what keeps records in order.
  void DrainLocked() REQUIRES(ssl_mu_, send_mu_) {
    size_t pending = BIO_ctrl_pending(wbio_);
    if (pending == 0) return;
    size_t old = tx_.size();
    tx_.resize(old + pending);
    int n = BIO_read(wbio_, tx_.data() + old, static_cast<int>(pending));
    tx_.resize(old + (n > 0 ? static_cast<size_t>(n) : 0));
  }
  // Reader thread only (or the handshake): one recv into rbio.
  Status RecvIntoBio(Deadline deadline, const char* what) {
    for (;;) {
      ssize_t n = ::recv(fd_, rx_.data(), rx_.size(), 0);
      if (n > 0) {
        std::lock_guard<std::mutex> lock(ssl_mu_);
        BIO_write(rbio_, rx_.data(), static_cast<int>(n));
        return Status::Ok();
      }
      if (n == 0) return Status::Closed("peer closed the connection");
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        if (shut_.load()) return Status::Closed("stream shut down locally");
        return IoErrno("recv from " + peer_, errno);
      }
      ROMULUS_RETURN_IF_ERROR(WaitFd(fd_, POLLIN, -1, deadline, what));
    }
  }

  Status HandshakeError(int err, std::string detail) {
    if (!note_.empty()) return Status::Unauthenticated(note_);
    if (err != SSL_ERROR_SSL) {
      return Status::Unauthenticated("TLS handshake failed (SSL error " + std::to_string(err) + ")");
    }
    if (detail.find("wrong version number") != std::string::npos ||
        detail.find("packet length too long") != std::string::npos ||
        detail.find("http request") != std::string::npos) {
      detail += " (the peer does not speak TLS: is it running with --insecure?)";
    }
    long vr = SSL_get_verify_result(ssl_);
    if (vr != X509_V_OK) detail += " (certificate: " + std::string(X509_verify_cert_error_string(vr)) + ")";
    return Status::Unauthenticated("TLS handshake failed: " + detail);
  }
  // Handshake only: one non-blocking recv into rbio; false if nothing was there.
  Result<bool> RecvOnceIntoBio() {
    for (;;) {
      ssize_t n = ::recv(fd_, rx_.data(), rx_.size(), 0);
      if (n > 0) {
        std::lock_guard<std::mutex> lock(ssl_mu_);
        BIO_write(rbio_, rx_.data(), static_cast<int>(n));
        return true;
      }
      if (n == 0) return Status::Closed("peer closed the connection");
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return false;
      return IoErrno("recv from " + peer_, errno);
    }
  }

  int fd_;
  std::string peer_;
  SSL* ssl_;
  BIO* rbio_;
  BIO* wbio_;
  bool psk_mode_ = false;
  std::string note_;  // handshake only: why the PSK callback refused the peer
  bool hs_done_ = false;  // handshake only
  Status hs_error_;       // handshake only: the failure, reported once the alert is out
  std::mutex ssl_mu_;  // every SSL_* and BIO_* call
  // Writes: SSL_write, draining wbio and sending, in order. Taken before
  // ssl_mu_, never while holding it.
  std::mutex send_mu_ ACQUIRED_BEFORE(ssl_mu_);
  std::vector<uint8_t> tx_ GUARDED_BY(send_mu_);
  std::vector<uint8_t> rx_;  // reader thread only
  bool eof_ = false;         // reader thread only
  Status write_status_ GUARDED_BY(send_mu_);  // sticky write failure
  std::atomic<bool> shut_{false};
};

}  // namespace

namespace {

class TlsHandshakeImpl final : public TlsHandshake {
 public:
  explicit TlsHandshakeImpl(std::unique_ptr<TlsStream> stream) : stream_(std::move(stream)) {}
  int fd() const override { return stream_->fd(); }
  Result<short> Step() override { return stream_->HandshakeStep(); }
  std::unique_ptr<Stream> Release() override { return std::move(stream_); }
  bool KeyProven() const override { return stream_->KeyProven(); }
  std::string Peer() const override { return stream_->Peer(); }

 private:
  std::unique_ptr<TlsStream> stream_;
};

}  // namespace

Result<std::unique_ptr<TlsHandshake>> StartTls(int fd, std::string peer, const SecurityContext& sec,
                                               bool server) {
  auto* impl = sec.impl();
  SSL* ssl = SSL_new(server ? impl->server : impl->client);
  BIO* rbio = BIO_new(BIO_s_mem());
  BIO* wbio = BIO_new(BIO_s_mem());
  if (!ssl || !rbio || !wbio) {
    if (ssl) SSL_free(ssl);
    if (rbio) BIO_free(rbio);
    if (wbio) BIO_free(wbio);
    ::close(fd);
    return Status::Internal("cannot allocate TLS state: " + DrainOpenSslErrors());
  }
  // An empty read BIO means "no data yet", not EOF.
  BIO_set_mem_eof_return(rbio, -1);
  SSL_set_bio(ssl, rbio, wbio);
  if (server) SSL_set_accept_state(ssl);
  else SSL_set_connect_state(ssl);
  std::string name = std::string(ModeName(sec.mode())) + " " + peer;
  auto stream = std::make_unique<TlsStream>(fd, name, ssl, rbio, wbio);
  stream->set_psk_mode(impl->psk_mode);
  return std::unique_ptr<TlsHandshake>(new TlsHandshakeImpl(std::move(stream)));
}

Result<std::unique_ptr<Stream>> NewTlsStream(int fd, std::string peer, const SecurityContext& sec,
                                             bool server, Deadline deadline) {
  auto hs = StartTls(fd, peer, sec, server);
  if (!hs.ok()) return hs.status();
  Status st;
  for (;;) {
    auto events = (*hs)->Step();
    if (!events.ok()) {
      st = events.status();
      break;
    }
    if (*events == 0) break;
    st = WaitFd((*hs)->fd(), *events, -1, deadline, "during the TLS handshake");
    if (!st.ok()) break;
  }
  if (!st.ok()) {
    spdlog::warn("TLS handshake with {} ({}) failed: {}{}", peer, server ? "incoming" : "outgoing",
                 st.message(), HandshakeHint(st, sec));
    return st.With("TLS handshake with " + peer);
  }
  spdlog::debug("TLS 1.3 session with {} established", peer);
  return (*hs)->Release();
}

std::string HandshakeHint(const Status& st, const SecurityContext& sec) {
  bool explained = st.message().find("different pre-shared key") != std::string::npos ||
                   st.message().find("does not speak TLS") != std::string::npos;
  if (st.code() != Code::kUnauthenticated || explained) return "";
  return sec.mode() == Security::Mode::kPsk
             ? " (is the peer using the same key file, and TLS rather than --insecure?)"
             : " (is the peer's certificate signed by our CA, and is it using TLS?)";
}

}  // namespace romulus::transport::internal
