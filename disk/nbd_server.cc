#include "disk/nbd_server.h"

#include <unistd.h>

#include <algorithm>
#include <cstring>

#include <spdlog/spdlog.h>

#include "transport/stream.h"

namespace romulus::disk {
namespace {

using transport::Deadline;
using transport::DeadlineIn;

// An option reply: header, plus the largest payload we send (NBD_REP_SERVER
// or NBD_INFO_NAME with a 4096-byte name, or an error message).
constexpr size_t kReplyBufSize = nbd::kOptionReplyHeaderSize + 8 + nbd::kMaxStringLength;
// Payloads of refused WRITEs are read and dropped through this, whatever
// length the client claimed.
constexpr size_t kDiscardBufSize = 64 * 1024;

}  // namespace

Result<std::unique_ptr<NbdServer>> NbdServer::Create(BackingStore* store, EpochClock* clock,
                                                     DiskWriteSink* sink, NbdServerOptions options) {
  if (!store || !clock || !sink) return Status::InvalidArgument("NBD server: store, clock and sink are required");
  if (options.export_name.size() > nbd::kMaxStringLength ||
      options.description.size() > nbd::kMaxStringLength - options.export_name.size()) {
    return Status::InvalidArgument("NBD server: export name and description must fit 4096 bytes");
  }
  if (options.handshake_timeout.count() <= 0 || options.payload_timeout.count() <= 0 ||
      options.reply_timeout.count() <= 0 || options.max_options == 0) {
    return Status::InvalidArgument("NBD server: timeouts and max_options must be positive");
  }
  return std::unique_ptr<NbdServer>(new NbdServer(store, clock, sink, std::move(options)));
}

NbdServer::NbdServer(BackingStore* store, EpochClock* clock, DiskWriteSink* sink,
                     NbdServerOptions options)
    : store_(store), exec_(store, clock, sink), options_(std::move(options)),
      option_buf_(new uint8_t[nbd::kMaxOptionData]),
      reply_buf_(new uint8_t[kReplyBufSize]),
      discard_buf_(new uint8_t[kDiscardBufSize]) {
  tx_flags_ = nbd::kTxHasFlags | nbd::kTxSendFlush;
  if (store_->read_only()) {
    tx_flags_ |= nbd::kTxReadOnly;
  } else {
    tx_flags_ |= nbd::kTxSendFua | nbd::kTxSendTrim | nbd::kTxSendWriteZeroes;
  }
}

NbdServerStats NbdServer::stats() const {
  NbdServerStats s;
  s.reads = stats_.reads.load();
  s.writes = stats_.writes.load();
  s.zeroes = stats_.zeroes.load();
  s.trims = stats_.trims.load();
  s.flushes = stats_.flushes.load();
  s.bytes_read = stats_.bytes_read.load();
  s.bytes_written = stats_.bytes_written.load();
  s.refused = stats_.refused.load();
  s.local_errors = stats_.local_errors.load();
  s.trims_ignored = stats_.trims_ignored.load();
  s.held = stats_.held.load();
  s.waiting_on_hold = stats_.waiting_on_hold.load();
  return s;
}

Status NbdServer::Hold(std::chrono::steady_clock::time_point deadline) {
  if (!exec_mu_.try_lock_until(deadline)) {
    return Status::Timeout("NBD export '" + options_.export_name +
                           "': a request was still executing at the hold's deadline");
  }
  return Status::Ok();
}

void NbdServer::Unhold() { exec_mu_.unlock(); }

void NbdServer::Stop() {
  std::lock_guard<std::mutex> lock(mu_);
  stopped_ = true;
  if (active_) active_->Shutdown();
}

Status NbdServer::Serve(int fd) {
  auto adopted = NbdSocket::Adopt(fd, "nbd client of " + options_.export_name);
  if (!adopted.ok()) return adopted.status();
  std::unique_ptr<NbdSocket> socket = std::move(*adopted);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopped_) return Status::Closed("NBD server stopped");
    // One client at a time: the buffers and the store are single-threaded.
    if (active_) return Status::InvalidArgument("NBD server already serves a client");
    active_ = socket.get();
  }
  Status st;
  handshake_deadline_ = std::chrono::steady_clock::now() + options_.handshake_timeout;
  Status timeouts = socket->SetTimeouts(options_.handshake_timeout, options_.handshake_timeout);
  auto go = timeouts.ok() ? Handshake(socket.get()) : Result<bool>(timeouts);
  if (!go.ok()) {
    st = go.status().With("NBD handshake");
  } else if (*go) {
    st = socket->SetTimeouts(options_.payload_timeout, options_.reply_timeout);
    if (st.ok()) st = ServeTransmission(socket.get());
  }
  bool stopped;
  {
    std::lock_guard<std::mutex> lock(mu_);
    active_ = nullptr;
    stopped = stopped_;
  }
  socket.reset();  // closes the connection
  // A stop wakes the reader as if the client had closed: say which it was.
  if (stopped) return Status::Closed("NBD server stopped");
  return st;
}

bool NbdServer::NameMatches(std::string_view name) const {
  return name.empty() || name == options_.export_name;
}

Status NbdServer::SendOptionReply(NbdSocket* s, uint32_t option, uint32_t type,
                                  std::span<const uint8_t> payload) {
  uint8_t header[nbd::kOptionReplyHeaderSize];
  nbd::EncodeOptionReplyHeader(header, option, type, static_cast<uint32_t>(payload.size()));
  std::span<const uint8_t> parts[2] = {header, payload};
  return s->WriteAll(parts, handshake_deadline_);
}

Status NbdServer::SendOptionError(NbdSocket* s, uint32_t option, uint32_t type,
                                  const std::string& message) {
  // Error replies may carry a message for humans (libnbd prints it).
  size_t n = std::min(message.size(), kReplyBufSize);
  return SendOptionReply(s, option, type,
                         std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(message.data()), n));
}

Status NbdServer::AnswerInfo(NbdSocket* s, uint32_t option, std::span<const uint8_t> data,
                             bool* go) {
  *go = false;
  auto req = nbd::ParseInfoRequest(data);
  if (!req.ok()) return SendOptionError(s, option, nbd::kRepErrInvalid, req.status().message());
  if (!NameMatches(req->name)) {
    return SendOptionError(s, option, nbd::kRepErrUnknown,
                           "no export named '" + std::string(req->name.substr(0, 256)) + "'");
  }
  std::span<uint8_t> buf(reply_buf_.get(), kReplyBufSize);
  // NBD_INFO_EXPORT is always sent (the spec requires it before the ACK).
  size_t n = nbd::EncodeInfoExport(buf, store_->size(), tx_flags_);
  ROMULUS_RETURN_IF_ERROR(SendOptionReply(s, option, nbd::kRepInfo, buf.first(n)));
  if (req->Wants(nbd::kInfoName)) {
    n = nbd::EncodeInfoName(buf, options_.export_name);
    ROMULUS_RETURN_IF_ERROR(SendOptionReply(s, option, nbd::kRepInfo, buf.first(n)));
  }
  if (req->Wants(nbd::kInfoBlockSize)) {
    // Minimum 1: the store does read-modify-write for unaligned requests,
    // so any byte range is correct; preferred is what avoids that.
    uint32_t preferred = std::max<uint32_t>(4096, store_->alignment());
    n = nbd::EncodeInfoBlockSize(buf, 1, preferred, store_->max_request());
    ROMULUS_RETURN_IF_ERROR(SendOptionReply(s, option, nbd::kRepInfo, buf.first(n)));
  }
  ROMULUS_RETURN_IF_ERROR(SendOptionReply(s, option, nbd::kRepAck, {}));
  *go = option == nbd::kOptGo;
  return Status::Ok();
}

Result<bool> NbdServer::Handshake(NbdSocket* s) {
  const uint16_t hs_flags = nbd::kFlagFixedNewstyle | nbd::kFlagNoZeroes;
  uint8_t greeting[nbd::kGreetingSize];
  nbd::EncodeGreeting(greeting, hs_flags);
  std::span<const uint8_t> greeting_part[1] = {greeting};
  ROMULUS_RETURN_IF_ERROR(s->WriteAll(greeting_part, handshake_deadline_));

  uint8_t cflags_bytes[nbd::kClientFlagsSize];
  ROMULUS_RETURN_IF_ERROR(s->ReadExact(cflags_bytes, handshake_deadline_).With("reading client flags"));
  auto cflags = nbd::DecodeClientFlags(cflags_bytes, hs_flags);
  if (!cflags.ok()) return cflags.status();
  const bool no_zeroes = (*cflags & nbd::kClientNoZeroes) != 0;
  // A client without FIXED_NEWSTYLE can only send EXPORT_NAME; the spec lets
  // a server answer it as fixed newstyle anyway, which is what happens below.

  for (uint32_t i = 0; i < options_.max_options; ++i) {
    uint8_t hdr_bytes[nbd::kOptionHeaderSize];
    ROMULUS_RETURN_IF_ERROR(s->ReadExact(hdr_bytes, handshake_deadline_).With("reading an option"));
    auto hdr = nbd::DecodeOptionHeader(hdr_bytes);
    if (!hdr.ok()) return hdr.status();
    if (hdr->length > nbd::kMaxOptionData) {
      // Never allocated, never read: a hostile length ends the connection.
      return Status::OutOfRange(std::string(nbd::OptionName(hdr->option)) + " carries " +
                                std::to_string(hdr->length) + " bytes of data (at most " +
                                std::to_string(nbd::kMaxOptionData) + ")");
    }
    std::span<uint8_t> data(option_buf_.get(), hdr->length);
    ROMULUS_RETURN_IF_ERROR(s->ReadExact(data, handshake_deadline_).With("reading option data"));

    switch (hdr->option) {
      case nbd::kOptExportName: {
        std::string_view name(reinterpret_cast<const char*>(data.data()), data.size());
        if (!NameMatches(name)) {
          // EXPORT_NAME has no error reply: the spec says to drop.
          return Status::InvalidArgument("client asked for export '" + std::string(name.substr(0, 256)) +
                                         "', this server has '" + options_.export_name + "'");
        }
        uint8_t reply[nbd::kExportNameReplySize + nbd::kExportNameZeroes];
        size_t n = nbd::EncodeExportNameReply(reply, store_->size(), tx_flags_, no_zeroes);
        std::span<const uint8_t> reply_part[1] = {std::span<const uint8_t>(reply, n)};
        ROMULUS_RETURN_IF_ERROR(s->WriteAll(reply_part, handshake_deadline_));
        return true;
      }
      case nbd::kOptAbort:
        // The spec asks for an ACK; the client may already be gone, which is fine.
        (void)SendOptionReply(s, hdr->option, nbd::kRepAck, {});
        return false;
      case nbd::kOptList: {
        if (hdr->length != 0) {
          ROMULUS_RETURN_IF_ERROR(SendOptionError(s, hdr->option, nbd::kRepErrInvalid,
                                                  "NBD_OPT_LIST carries no data"));
          break;
        }
        std::span<uint8_t> buf(reply_buf_.get(), kReplyBufSize);
        size_t n = nbd::EncodeRepServer(buf, options_.export_name);
        // The rest of an NBD_REP_SERVER is a description for humans.
        size_t d = std::min(options_.description.size(), kReplyBufSize - n);
        std::memcpy(buf.data() + n, options_.description.data(), d);
        ROMULUS_RETURN_IF_ERROR(SendOptionReply(s, hdr->option, nbd::kRepServer, buf.first(n + d)));
        ROMULUS_RETURN_IF_ERROR(SendOptionReply(s, hdr->option, nbd::kRepAck, {}));
        break;
      }
      case nbd::kOptInfo:
      case nbd::kOptGo: {
        bool go = false;
        ROMULUS_RETURN_IF_ERROR(AnswerInfo(s, hdr->option, data, &go));
        if (go) return true;
        break;
      }
      default:
        // STARTTLS (the socket is local), STRUCTURED_REPLY, meta contexts and
        // anything unknown: the client goes on without them.
        ROMULUS_RETURN_IF_ERROR(SendOptionError(s, hdr->option, nbd::kRepErrUnsup,
                                                std::string(nbd::OptionName(hdr->option)) +
                                                    " is not supported by this server"));
        break;
    }
  }
  return Status::OutOfRange("client sent " + std::to_string(options_.max_options) +
                            " options without choosing an export");
}

Status NbdServer::Reply(NbdSocket* s, uint32_t error, uint64_t cookie,
                        std::span<const uint8_t> data) {
  uint8_t header[nbd::kSimpleReplySize];
  nbd::EncodeSimpleReply(header, error, cookie);
  std::span<const uint8_t> parts[2] = {header, data};
  return s->WriteAll(parts, DeadlineIn(options_.reply_timeout)).With("writing a reply");
}

Status NbdServer::Discard(NbdSocket* s, uint64_t bytes) {
  Deadline deadline = DeadlineIn(options_.payload_timeout);
  while (bytes > 0) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(bytes, kDiscardBufSize));
    ROMULUS_RETURN_IF_ERROR(s->ReadExact(std::span<uint8_t>(discard_buf_.get(), n), deadline));
    bytes -= n;
  }
  return Status::Ok();
}

Status NbdServer::ServeTransmission(NbdSocket* s) {
  spdlog::info("nbd export '{}': client in transmission, {} bytes, {}", options_.export_name,
               store_->size(), store_->io_mode());
  for (;;) {
    uint8_t hdr_bytes[nbd::kRequestSize];
    size_t got = 0;
    // The kernel client idles for hours between requests: a read timeout
    // with nothing read just means "still idle". A header that has begun
    // must finish within payload_timeout.
    Status st = s->ReadExact(hdr_bytes, DeadlineIn(options_.payload_timeout), &got);
    if (st.code() == Code::kTimeout && got > 0) {
      // The socket's timeout runs from the start of the idle wait, so a
      // header that began near its end gets a whole payload_timeout of its
      // own before it counts as stalled.
      size_t more = 0;
      st = s->ReadExact(std::span<uint8_t>(hdr_bytes).subspan(got), DeadlineIn(options_.payload_timeout), &more);
      got += more;
    }
    if (!st.ok()) {
      if (got == 0 && st.code() == Code::kTimeout) continue;
      if (st.code() == Code::kClosed && got == 0) return Status::Ok();  // closed between requests
      return st.With("reading a request header (" + std::to_string(got) + " of 28 bytes)");
    }
    // A Hold (the export's full copy) keeps the request from starting; the
    // lock is released with the tag, before the reply (Hold's contract).
    std::unique_lock<std::timed_mutex> executing(exec_mu_, std::try_to_lock);
    if (!executing.owns_lock()) {
      stats_.held.fetch_add(1);
      stats_.waiting_on_hold.fetch_add(1);
      executing.lock();
      stats_.waiting_on_hold.fetch_sub(1);
    }
    // The tag is taken now, before anything of the request is done: the
    // consistency argument (docs/DISK.md §4) depends on it.
    RequestExecutor::Ticket tag = exec_.Begin();
    auto req = nbd::DecodeRequest(hdr_bytes);
    if (!req.ok()) return req.status();
    const nbd::Request& r = *req;
    if (r.type == nbd::kCmdDisc) return Status::Ok();

    const uint32_t refusal = nbd::ValidateRequest(r, store_->size(), store_->max_request(), tx_flags_);
    const bool fua = (r.flags & nbd::kCmdFlagFua) != 0;
    if (refusal != 0) {
      stats_.refused.fetch_add(1);
      if (r.type == nbd::kCmdWrite) {
        // The payload follows whatever we think of it; read and drop it in
        // bounded chunks so the stream stays in step.
        Status d = Discard(s, r.length);
        if (!d.ok()) {
          return d.With("discarding a refused WRITE payload of " + std::to_string(r.length) +
                        " bytes (all of it within payload_timeout)");
        }
      }
      tag.Release();
      executing.unlock();
      ROMULUS_RETURN_IF_ERROR(Reply(s, refusal, r.cookie));
      continue;
    }

    DiskOutcome outcome = DiskOutcome::kDone;
    switch (r.type) {
      case nbd::kCmdRead: {
        auto data = store_->Read(r.offset, r.length);
        tag.Release();
        // The data is in the store's bounce buffer, which only this thread
        // uses (a full copy reads through a store of its own).
        executing.unlock();
        if (!data.ok()) {
          stats_.local_errors.fetch_add(1);
          spdlog::warn("nbd export '{}': {}", options_.export_name, data.status().ToString());
          ROMULUS_RETURN_IF_ERROR(Reply(s, nbd::ErrorFromErrno(store_->last_errno()), r.cookie));
          continue;
        }
        stats_.reads.fetch_add(1);
        stats_.bytes_read.fetch_add(r.length);
        ROMULUS_RETURN_IF_ERROR(Reply(s, 0, r.cookie, *data));
        continue;
      }
      case nbd::kCmdWrite: {
        std::span<uint8_t> buf = store_->WriteBuffer(r.offset, r.length);
        size_t have = 0;
        Status rd = s->ReadExact(buf, DeadlineIn(options_.payload_timeout), &have);
        if (!rd.ok()) {
          // Nothing was written and nothing is reported; the tag is released
          // by the ticket.
          return rd.With("client went away in the middle of a WRITE payload (" + std::to_string(have) +
                         " of " + std::to_string(r.length) + " bytes at offset " +
                         std::to_string(r.offset) + "): nothing written");
        }
        if (r.length == 0) break;
        outcome = exec_.Write(tag, r.offset, buf, fua);
        if (outcome == DiskOutcome::kDone) {
          stats_.writes.fetch_add(1);
          stats_.bytes_written.fetch_add(r.length);
        }
        break;
      }
      case nbd::kCmdFlush:
        outcome = exec_.Flush(tag);
        if (outcome == DiskOutcome::kDone) stats_.flushes.fetch_add(1);
        break;
      case nbd::kCmdTrim:
        if (r.length == 0) break;
        outcome = exec_.Trim(tag, r.offset, r.length, fua);
        if (outcome == DiskOutcome::kDone) stats_.trims.fetch_add(1);
        if (outcome == DiskOutcome::kTrimIgnored) stats_.trims_ignored.fetch_add(1);
        break;
      case nbd::kCmdWriteZeroes: {
        if (r.length == 0) break;
        const bool may_punch = (r.flags & nbd::kCmdFlagNoHole) == 0;
        outcome = exec_.WriteZeroes(tag, r.offset, r.length, may_punch, fua);
        if (outcome == DiskOutcome::kDone) stats_.zeroes.fetch_add(1);
        break;
      }
      default:
        return Status::Internal("NBD request type " + std::to_string(r.type) + " passed validation");
    }
    uint32_t error = 0;
    if (outcome == DiskOutcome::kFailed) {
      spdlog::warn("nbd export '{}': {}", options_.export_name, exec_.last_failure().ToString());
      error = nbd::ErrorFromErrno(exec_.last_errno());
      stats_.local_errors.fetch_add(1);
    }
    // Reported (or not), so the epoch may be sealed; only then the client
    // hears that the request completed.
    tag.Release();
    executing.unlock();
    ROMULUS_RETURN_IF_ERROR(Reply(s, error, r.cookie));
  }
}

}  // namespace romulus::disk
