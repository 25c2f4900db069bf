// CheckpointReceiver: the backup's end of one primary connection.
//
// Serve() answers the handshake, then loops: read a frame into the reusable
// ReusableBuffer, decode PAGES against the mirror cache and hand pages to the
// sink, pass STATE records through, and on EPOCH_END verify counts and the
// memory digest, Commit the epoch in the sink, then ACK it. It sends
// heartbeats and returns when the session ends, saying why: a clean BYE from
// the primary, or a failure (EOF, error, corruption, silence longer than the
// failover timeout) after which the caller decides on failover.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "common/status.h"
#include "compress/page_codec.h"
#include "protocol/messages.h"
#include "restore/failover_judge.h"
#include "restore/guest_sink.h"
#include "restore/running_clock.h"
#include "transport/stream.h"

namespace romulus::restore {

struct ReceiverOptions {
  // The largest page cache a primary may ask for, at HELLO and in a live
  // CACHE_RESIZE (`restore --max-cache-size`); 0 = no limit.
  uint64_t cache_pages = (64ull << 20) / 4096;
  // Capabilities this backup agrees to (tests emulate an older backup).
  uint64_t capabilities = protocol::kCapAllKnown;
  // Fill CommitEvent::cache_digest (hashes the whole mirror cache at every
  // commit: for tests and drills, not for production).
  bool digest_cache_on_commit = false;
  size_t max_frame_bytes = 8u << 20;
  std::chrono::milliseconds heartbeat_interval{100};
  // The primary is silent when no byte of it arrived for this long, counted
  // in this process's running time (restore/running_clock.h). The backup's
  // own `--failover-timeout`, never the primary's ack timeout.
  std::chrono::milliseconds failover_timeout{1000};
  // A connection must deliver its HELLO this soon (pre-authentication bound
  // on --insecure links; the TLS handshake bounds it before on TLS links).
  std::chrono::milliseconds hello_timeout{2000};
  // After a failed write (ACK), keep reading this long for the primary's
  // ERROR or BYE, which says why it closed (docs/FAILURE-MODEL.md §2).
  std::chrono::milliseconds read_on_after_write_failure{1000};
  uint64_t max_guest_pages = uint64_t{1} << 28;  // 1 TiB: refuse larger guests
};

struct CommitEvent {
  uint64_t epoch = 0;
  uint64_t digest = 0;
  uint64_t pages = 0;
  uint64_t wire_bytes = 0;
  uint64_t cache_pages = 0;   // the mirror cache's capacity after this epoch
  uint64_t cache_digest = 0;  // its StateDigest, with digest_cache_on_commit
  uint64_t guest_pages = 0;   // the session's guest size (HELLO)
  // kCapDiskSync: empty when every disk is whole at this epoch; otherwise
  // why the checkpoint cannot be resumed ("disk xvdb is still being copied
  // (37%)"). It is committed and acked all the same (the copy goes on), but
  // never activated.
  std::string incomplete;
};

struct SessionEnd {
  // The handshake succeeded: a primary was really being served. A connection
  // that ends before that (a port probe, a refused HELLO, a wrong guest) says
  // nothing about the primary's health and must not cause a failover.
  bool established = false;
  bool clean_stop = false;  // primary said BYE: do not fail over
  // With clean_stop: why. kHandover (planned switchover, `romulus
  // switchover`) means the primary stopped its guest after the last epoch
  // and the backup should activate.
  protocol::ByeReason bye_reason = protocol::ByeReason::kOperatorStop;
  std::string bye_text;     // with clean_stop: the BYE's text (printable), "?" if it did not decode
  Status reason;            // why the session ended otherwise
  // What the failover decision needs to know (restore/failover_judge.h).
  EndCause cause = EndCause::kNotEstablished;
  // Running time (the clock passed to Serve) of the last byte from the primary.
  std::chrono::nanoseconds last_heard{0};
  uint64_t epochs_committed = 0;
  uint64_t receive_reallocations = 0;  // ReusableBuffer growths after the first epoch
  // This backup refused the HELLO (any reason but its own storage): the
  // identity it named, else empty. The caller decides whether that was the
  // primary of the guest it holds (FailoverJudge::PrimaryRefused).
  std::string refused_identity;
};

class CheckpointReceiver {
 public:
  using CommitCallback = std::function<void(const CommitEvent&)>;
  // Called with the running time whenever bytes of the primary arrived
  // since the last call (at most every wake-up, ~100 ms).
  using HeardCallback = std::function<void(std::chrono::nanoseconds running)>;
  explicit CheckpointReceiver(const ReceiverOptions& opts);
  ~CheckpointReceiver();

  // Reads the connection's first frame, which must be a syntactically valid
  // HELLO, within `deadline`. Needs no receiver: run it concurrently for
  // every new connection so that a silent peer holds nothing (the backup
  // service does).
  static Result<protocol::Hello> ReadHello(transport::Stream& stream, transport::Deadline deadline);

  // Serves one session whose HELLO was read: negotiate, answer HELLO_ACK,
  // receive and commit epochs until the session ends. `clock` is advanced at
  // every wake-up; silence is measured on it.
  SessionEnd Serve(transport::Stream& stream, const protocol::Hello& hello, GuestSink& sink, RunningClock& clock,
                   const CommitCallback& on_commit, const HeardCallback& on_heard = nullptr);
  // The same, reading the HELLO first (hello_timeout) and with a clock of its own.
  SessionEnd Serve(transport::Stream& stream, GuestSink& sink, const CommitCallback& on_commit);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace romulus::restore
