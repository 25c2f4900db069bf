// One NBD export, one client at a time (docs/DISK.md §1–§3, §9): the
// primary's front end for one protected disk. The kernel NBD client (or any
// NBD client) connects over a UNIX socket; reads are served from the local
// store, and every mutating request, once done locally, is reported to the
// DiskWriteSink with the epoch tag taken when its header was read, before
// the client is answered.
//
// Requests are executed one at a time, in the order read: the sink sees them
// in that order, and at most one request per disk is in flight when the
// epoch advances.
//
// Hostile or broken clients get a clear Status and a dropped connection,
// never a crash or an allocation they chose: option data and request
// lengths are bounded before anything is read into memory (§9).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "common/status.h"
#include "common/thread_annotations.h"
#include "disk/backing_store.h"
#include "disk/epoch_clock.h"
#include "disk/front_end_hold.h"
#include "disk/nbd_socket.h"
#include "disk/nbd_wire.h"
#include "disk/request_executor.h"
#include "disk/write_sink.h"

namespace romulus::disk {

struct NbdServerOptions {
  // The export's name. A client asking for the empty name (the NBD
  // "default export") gets it too.
  std::string export_name = "disk";
  std::string description;  // shown by NBD_OPT_LIST, may be empty
  // From accept to NBD_OPT_GO/EXPORT_NAME: a client that sits silent or
  // trickles its options is dropped after this.
  std::chrono::milliseconds handshake_timeout{10000};
  // A WRITE's payload must follow its header within this (the kernel client
  // sends them back to back); past it the client is dropped, nothing written.
  // A request header that has begun must be complete within it too (at
  // most twice it: the socket's timeout counts from the idle wait the header
  // began in). A client may idle between requests for as long as it likes.
  std::chrono::milliseconds payload_timeout{30000};
  // A reply the client does not read within this drops it.
  std::chrono::milliseconds reply_timeout{30000};
  // Options one handshake may send before GO; a client looping on options
  // is dropped.
  uint32_t max_options = 64;
};

struct NbdServerStats {
  uint64_t reads = 0, writes = 0, zeroes = 0, trims = 0, flushes = 0;
  uint64_t bytes_read = 0, bytes_written = 0;
  uint64_t refused = 0;       // requests answered with an error before touching the store
  uint64_t local_errors = 0;  // requests the store failed
  uint64_t trims_ignored = 0; // TRIMs the store could not punch (data kept, nothing reported)
  uint64_t held = 0;          // requests that waited for a Hold to end before taking their tag
  uint64_t waiting_on_hold = 0;  // gauge: a request read and waiting for a Hold now (0 or 1)
};

class NbdServer final : public FrontEndHold {
 public:
  // store, clock and sink must outlive the server.
  static Result<std::unique_ptr<NbdServer>> Create(BackingStore* store, EpochClock* clock,
                                                   DiskWriteSink* sink, NbdServerOptions options);

  // Serves one client on a connected stream socket (takes ownership of fd)
  // until it is done. Ok: NBD_CMD_DISC, NBD_OPT_ABORT, or a close between
  // requests. Closed: the client vanished in the middle of a request (nothing
  // of that request was written or reported), or Stop(). Timeout, Corruption,
  // OutOfRange: a silent, malformed or hostile client, dropped. One Serve at
  // a time (a second concurrent call is refused, its fd closed); call it
  // again for the next client.
  Status Serve(int fd);
  // From any thread: ends the Serve in progress (and any later one at once).
  void Stop();

  // Holds the front end still (docs/DISK.md §8a, the export's full copy):
  // returns once no request is executing — none is between taking its
  // epoch tag and releasing it — and keeps the next one from taking its tag
  // until Unhold(). A request's reply is written after its release, and the
  // wait for the next request's header happens outside the hold, so a client
  // that stops reading or sends nothing never blocks a Hold; the longest a
  // Hold can wait is one request's execution, including a WRITE payload
  // still arriving (bounded by payload_timeout). Timeout if the deadline
  // passes first (then nothing is held). From any thread but the serving one.
  Status Hold(std::chrono::steady_clock::time_point deadline) override;
  void Unhold() override;

  uint16_t transmission_flags() const { return tx_flags_; }
  NbdServerStats stats() const;

 private:
  NbdServer(BackingStore* store, EpochClock* clock, DiskWriteSink* sink, NbdServerOptions options);

  // Result: true to enter transmission, false when the client aborted.
  Result<bool> Handshake(NbdSocket* s);
  Status SendOptionReply(NbdSocket* s, uint32_t option, uint32_t type,
                         std::span<const uint8_t> payload);
  Status SendOptionError(NbdSocket* s, uint32_t option, uint32_t type,
                         const std::string& message);
  Status AnswerInfo(NbdSocket* s, uint32_t option, std::span<const uint8_t> data, bool* go);
  bool NameMatches(std::string_view name) const;

  Status ServeTransmission(NbdSocket* s);
  Status Reply(NbdSocket* s, uint32_t error, uint64_t cookie,
               std::span<const uint8_t> data = {});
  Status Discard(NbdSocket* s, uint64_t bytes);

  BackingStore* store_;
  RequestExecutor exec_;  // the write path: tag, store, report (request_executor.h); it holds the clock and the sink
  NbdServerOptions options_;
  uint16_t tx_flags_ = 0;
  std::chrono::steady_clock::time_point handshake_deadline_;

  // Taken by the serve loop from a request's tag (Begin) to its release, and
  // by Hold. Never held while waiting for a client's next header.
  std::timed_mutex exec_mu_;

  std::mutex mu_;
  NbdSocket* active_ GUARDED_BY(mu_) = nullptr;
  bool stopped_ GUARDED_BY(mu_) = false;

  // Preallocated: one option's data, one option reply, a discard buffer.
  std::unique_ptr<uint8_t[]> option_buf_;  // nbd::kMaxOptionData
  std::unique_ptr<uint8_t[]> reply_buf_;   // kReplyBufSize
  std::unique_ptr<uint8_t[]> discard_buf_; // kDiscardBufSize

  struct AtomicStats {
    std::atomic<uint64_t> reads{0}, writes{0}, zeroes{0}, trims{0}, flushes{0};
    std::atomic<uint64_t> bytes_read{0}, bytes_written{0};
    std::atomic<uint64_t> refused{0}, local_errors{0}, trims_ignored{0};
    std::atomic<uint64_t> held{0}, waiting_on_hold{0};
  } stats_;
};

}  // namespace romulus::disk
