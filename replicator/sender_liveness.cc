// CheckpointSender's threads and its rules for judging the backup
// (docs/PROTOCOL.md §6):
//  - reader: acks, heartbeats, errors; silence longer than peer_timeout means
//    the backup is gone (it stopped, crashed, or the path died);
//  - wire: writes the OutBuffer's flushes frame group by frame group, for as
//    long as they take: a slow backup is backpressure. Only a write that
//    makes no progress at all for write_timeout while the backup still
//    heartbeats (a wedged receive loop) fails the session;
//  - heartbeat: tells the backup we are alive when no data is on its way;
//  - drain: when the session is given up, the backup is told so (ERROR
//    kResync) and its connection is read to the end, so that a backup that
//    was only stalled reads a clean "resync", never a reset it could take
//    for the primary's death.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <list>

#include "common/clock.h"
#include "common/thread_name.h"
#include "protocol/messages.h"
#include "replicator/checkpoint_sender_impl.h"

namespace romulus::replicator {

using Clock = CheckpointSender::Impl::Clock;
using protocol::FrameType;
using protocol::kFrameHeaderSize;
using std::chrono::duration_cast;
using std::chrono::microseconds;
using std::chrono::milliseconds;

namespace {

// Progress is judged per group of frames handed to the stream at once; a
// group is at most this big (or one frame, if larger).
constexpr size_t kWireGroupBytes = 256 << 10;
// How often a long ack wait says what it is waiting for.
constexpr auto kWaitNoteEvery = std::chrono::seconds(10);
// How long a failed write waits for the reader to bring the backup's last
// word (its ERROR or BYE) before the write's own error is the reason.
constexpr auto kPeerLastWordWait = std::chrono::seconds(1);

std::string Ms(milliseconds d) { return std::to_string(d.count()) + " ms"; }

}  // namespace

void CheckpointSender::Impl::Fail(const Status& st) {
  {
    std::lock_guard<std::mutex> lock(mu);
    if (!failure.ok() || stopping) return;
    failure = st;
    failed.store(true);
  }
  // No Shutdown here: a write under way is finished by the drain, and the
  // reader keeps reading, so the backup is told why instead of being reset.
  cv.notify_all();
}

// A write to the backup failed (EPIPE, reset): the backup usually closed
// after saying why (ERROR resource on a full disk, BYE), and the reader is
// about to read that. Its word names the cause; "Broken pipe" does not. So
// wait, briefly and bounded, for the reader to record it or reach EOF.
void CheckpointSender::Impl::FailAfterWriteError(const Status& st) {
  {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait_for(lock, kPeerLastWordWait, [&] { return !failure.ok() || reader_done || stopping; });
  }
  Fail(st);
}

void CheckpointSender::Impl::StartThreads() {
  reader = std::thread([this] {
    NameThisThread("ack-reader");
    ReadLoop();
  });
  heartbeat = std::thread([this] {
    NameThisThread("heartbeat");
    HeartbeatLoop();
  });
  wire = std::thread([this] {
    NameThisThread("wire");
    WireLoop();
  });
}

void CheckpointSender::Impl::Cut() {
  {
    std::lock_guard<std::mutex> lock(mu);
    stopping = true;
  }
  cv.notify_all();
  if (stream) stream->Shutdown();  // none when the connection itself failed (Start)
}

void CheckpointSender::Impl::JoinThreads() {
  for (std::thread* t : {&reader, &heartbeat, &wire}) {
    if (t->joinable()) t->join();
  }
}

// ---- reader -----------------------------------------------------------------

void CheckpointSender::Impl::ReadLoop() {
  if (ReadFrames()) DiscardUntilEof();
  {
    std::lock_guard<std::mutex> lock(mu);
    reader_done = true;
  }
  cv.notify_all();
}

// Reads acks, heartbeats and errors until the session fails or stops. Any
// byte proves liveness; silence longer than peer_timeout means the backup
// is gone. Returns false on a clean stop (nothing left to read).
bool CheckpointSender::Impl::ReadFrames() {
  buffer::ReusableBuffer rb(4096, 64 * 1024);
  protocol::FrameReader reader(stream.get(), &rb);
  while (true) {
    {
      std::lock_guard<std::mutex> lock(mu);
      if (stopping) return false;
      if (!failure.ok()) return true;
    }
    auto frame = reader.Next(transport::DeadlineIn(opts.peer_timeout));
    if (!frame.ok()) {
      if (frame.status().code() == Code::kTimeout) {
        if (Clock::now() - reader.last_byte_time() < opts.peer_timeout) continue;
        Fail(Status::Timeout("backup silent for " + Ms(opts.peer_timeout)));
        return true;
      }
      bool expected;
      {
        std::lock_guard<std::mutex> lock(mu);
        expected = stopping || bye_received || bye_sent;
      }
      if (!expected) Fail(frame.status().With("reading from backup"));
      return true;
    }
    switch (frame->type()) {
      case FrameType::kAck: {
        auto ack = protocol::DecodeAckFrame(frame->epoch(), frame->payload);
        if (!ack.ok()) {
          Fail(ack.status());
          return true;
        }
        std::unique_lock<std::mutex> lock(mu);
        if (ack->epoch == awaiting_epoch && ack->digest != expected_ack_digest) {
          lock.unlock();
          Fail(Status::Corruption("backup's digest " + DigestHex(ack->digest) + " for epoch " +
                                  std::to_string(ack->epoch) + " differs from ours " +
                                  DigestHex(expected_ack_digest) + ": images diverged"));
          return true;
        }
        if (static_cast<int64_t>(ack->epoch) > last_acked) {
          last_acked = static_cast<int64_t>(ack->epoch);
          ack_latency = duration_cast<microseconds>(Clock::now() - end_sent);
        }
        lock.unlock();
        cv.notify_all();
        break;
      }
      case FrameType::kHeartbeat:
        break;
      case FrameType::kBye: {
        auto bye = protocol::Bye::Decode(frame->payload);
        {
          std::lock_guard<std::mutex> lock(mu);
          bye_received = true;
          if (!stopping && !bye_sent && failure.ok()) {
            failure = Status::Closed("backup said goodbye (" +
                                     (bye.ok() ? protocol::Printable(bye->text) : std::string("?")) + ")");
            failed.store(true);
          }
        }
        cv.notify_all();
        return true;
      }
      case FrameType::kError: {
        auto err = protocol::Error::Decode(frame->payload);
        const std::string what = err.ok() ? protocol::ErrorCodeName(err->code) + ": " + protocol::Printable(err->text)
                                          : std::string("malformed ERROR frame");
        // A backup that cannot hold this guest at all says so; anything
        // else is a failed session the primary resynchronises.
        if (err.ok() && err->code == uint16_t(protocol::ErrorCode::kCapabilities)) {
          Fail(Status::Unsupported("backup refused the guest: " + what));
        } else {
          Fail(Status::Corruption("backup reported an error: " + what));
        }
        return true;
      }
      default:
        Fail(Status::Corruption("unexpected " + protocol::FrameTypeName(frame->header.type) +
                                " frame from backup"));
        return true;
    }
  }
}

// After the session failed: whatever the backup still writes (the ack it
// was about to send when it stalled, heartbeats) is read and dropped, so
// our kernel never answers it with a reset, until its EOF or the drain cuts
// the stream. Raw reads: a frame the reader gave up on must not stop this.
void CheckpointSender::Impl::DiscardUntilEof() {
  std::vector<uint8_t> sink(64 * 1024);
  for (;;) {
    {
      std::lock_guard<std::mutex> lock(mu);
      if (stopping) return;
    }
    auto got = stream->ReadSome(sink, transport::DeadlineIn(milliseconds(100)));
    if (!got.ok() && got.status().code() != Code::kTimeout) return;  // EOF, reset or cut
  }
}

// ---- heartbeat --------------------------------------------------------------

void CheckpointSender::Impl::HeartbeatLoop() {
  std::unique_lock<std::mutex> lock(mu);
  auto next = Clock::now() + opts.heartbeat_interval;
  for (;;) {
    if (cv.wait_until(lock, next, [&] { return !failure.ok() || stopping; })) return;
    next = Clock::now() + opts.heartbeat_interval;
    // Data on its way says we are alive; a heartbeat queued behind a write
    // the backup is slow to read would add nothing.
    if (job.pending) continue;
    protocol::Heartbeat hb;
    hb.send_ns = MonotonicNs();
    hb.committed = last_acked < 0 ? 0 : static_cast<uint64_t>(last_acked);
    hb_writing = true;
    lock.unlock();
    // No deadline: a full socket is backpressure like any write. A silent
    // backup fails the session (reader) and the drain bounds this write.
    Status st = writer->Send(hb, current_epoch.load(), transport::NoDeadline());
    lock.lock();
    hb_writing = false;
    cv.notify_all();
    if (!st.ok()) {
      lock.unlock();
      FailAfterWriteError(st.With("sending heartbeat"));
      lock.lock();
    }
  }
}

// ---- wire -------------------------------------------------------------------

void CheckpointSender::Impl::WireLoop() {
  std::unique_lock<std::mutex> lock(mu);
  for (;;) {
    cv.wait(lock, [&] { return job.pending || stopping; });
    if (!job.pending) return;
    const auto bytes = job.bytes;
    lock.unlock();
    Status st = WriteInGroups(bytes);
    lock.lock();
    job.result = st;
    job.pending = false;
    cv.notify_all();
  }
}

// Writes whole frames, a group at a time, with no deadline: how long a slow
// backup takes is not held against it (FlushToWire judges progress), and
// Cut() ends a write that must not go on.
Status CheckpointSender::Impl::WriteInGroups(std::span<const uint8_t> bytes) {
  size_t off = 0;
  while (off < bytes.size()) {
    size_t end = off;
    do {
      auto h = protocol::DecodeFrameHeader(bytes.subspan(end));
      if (!h.ok() || end + kFrameHeaderSize + h->length > bytes.size()) {
        return Status::Internal("sender: malformed frame at offset " + std::to_string(end) + " of a flush");
      }
      end += kFrameHeaderSize + h->length;
    } while (end < bytes.size() && end - off < kWireGroupBytes);
    ROMULUS_RETURN_IF_ERROR(writer->WriteFrames(bytes.subspan(off, end - off), transport::NoDeadline()));
    off = end;
    {
      std::lock_guard<std::mutex> lock(mu);
      job.progress = Clock::now();
    }
    cv.notify_all();
  }
  return Status::Ok();
}

Status CheckpointSender::Impl::FlushToWire(std::span<const uint8_t> bytes) {
  std::unique_lock<std::mutex> lock(mu);
  if (!failure.ok()) return failure;
  if (job.pending) return Status::Internal("sender: flush while the previous one is still being written");
  job.bytes = bytes;
  job.pending = true;
  job.result = Status::Ok();
  job.progress = Clock::now();
  cv.notify_all();
  const milliseconds stall =
      current_epoch.load() == guest.first_epoch ? opts.first_epoch_write_timeout : opts.write_timeout;
  while (job.pending && failure.ok()) {
    if (stall.count() <= 0) {  // no bound: only the backup's silence ends the wait
      cv.wait(lock);
      continue;
    }
    cv.wait_until(lock, job.progress + stall);
    if (job.pending && failure.ok() && Clock::now() - job.progress >= stall) {
      lock.unlock();
      Fail(Status::Timeout("the backup is alive but accepted no data for " + Ms(stall) +
                           " (its receive loop is stuck)"));
      lock.lock();
    }
  }
  if (job.pending) return failure;  // the write goes on; the drain finishes it
  if (!job.result.ok()) {
    Status st = job.result;
    lock.unlock();
    FailAfterWriteError(st);
    return CurrentFailure();  // the backup's reason, when it gave one
  }
  return Status::Ok();
}

// ---- waiting for acks ---------------------------------------------------------

Status CheckpointSender::WaitAck(uint64_t epoch, milliseconds timeout, const std::atomic<bool>* cancel) {
  Impl& im = *impl_;
  std::unique_lock<std::mutex> lock(im.mu);
  auto settled = [&] { return im.last_acked >= static_cast<int64_t>(epoch) || !im.failure.ok(); };
  if (timeout == kWhileAlive) {
    // The backup is alive (the reader fails the session on silence): its
    // commit may take as long as it takes. Say what we wait for.
    const auto t0 = Clock::now();
    auto note = t0 + kWaitNoteEvery;
    while (!im.cv.wait_for(lock, milliseconds(100), settled)) {
      if (cancel && cancel->load()) {
        return Status::Closed("stop requested while waiting for the backup's ack of epoch " + std::to_string(epoch));
      }
      if (Clock::now() >= note) {
        note += kWaitNoteEvery;
        spdlog::info("waiting for the backup to commit epoch {} ({} s so far; it is alive)", epoch,
                     duration_cast<std::chrono::seconds>(Clock::now() - t0).count());
      }
    }
  } else {
    im.cv.wait_for(lock, timeout, settled);
  }
  if (im.last_acked >= static_cast<int64_t>(epoch)) return Status::Ok();
  if (!im.failure.ok()) return im.failure;
  Status st = Status::Timeout("no ack for epoch " + std::to_string(epoch) + " within " + Ms(timeout) +
                              " although the backup is alive (its receive loop is stuck, or it is too slow "
                              "for --ack-timeout)");
  lock.unlock();
  im.Fail(st);
  return st;
}

// ---- drain --------------------------------------------------------------------

void CheckpointSender::Impl::Drain() {
  const auto deadline = Clock::now() + opts.drain_timeout;
  // The epoch thread let go of this session: its page cache and digest (tens
  // of MiB for a large guest) are not needed to drain it. A flapping backup
  // may leave a few drains running at once; they must stay small.
  batch.reset();
  encoder.reset();
  digest.reset();
  Status why;
  bool idle;
  {
    std::unique_lock<std::mutex> lock(mu);
    if (failure.ok()) {
      failure = Status::Closed("session abandoned");
      failed.store(true);
    }
    why = failure;
    cv.notify_all();
    // The frames on their way go out whole first: the backup must be able
    // to read everything up to our ERROR.
    idle = cv.wait_until(lock, deadline, [&] { return (!job.pending && !hb_writing) || stopping; }) && !stopping;
  }
  Status told = Status::Timeout("the backup read nothing within the drain bound");
  if (idle) {
    out.reset();  // nothing of it is on its way any more
    if (heartbeat.joinable()) heartbeat.join();  // it saw the failure and is not writing
    auto err = protocol::Error::Make(protocol::ErrorCode::kResync,
                                     "primary gives this session up and will start a new one: " + why.ToString());
    told = writer->Send(err, current_epoch.load(), deadline);
    if (told.ok()) {
      stream->ShutdownWrite();
      // Read until the backup's EOF: it closes once it has read the ERROR.
      std::unique_lock<std::mutex> lock(mu);
      cv.wait_until(lock, deadline, [&] { return reader_done || stopping; });
    }
  }
  spdlog::debug("drained the abandoned session with {}: {}", stream->Peer(),
                told.ok() ? "backup told (ERROR resync)" : told.ToString());
  Cut();
  JoinThreads();
  stream->Close();
}

namespace {

// The drains still running; reaped as new ones start, cut at exit.
class DrainSet {
 public:
  static DrainSet& Get() {
    static DrainSet set;
    return set;
  }
  void Start(std::unique_ptr<CheckpointSender::Impl> impl) {
    std::lock_guard<std::mutex> lock(mu_);
    Reap();
    entries_.emplace_back();
    Entry& e = entries_.back();
    e.impl = std::move(impl);
    CheckpointSender::Impl* raw = e.impl.get();
    std::atomic<bool>* done = &e.done;
    e.thread = std::thread([raw, done] {
      NameThisThread("drain");
      raw->Drain();
      done->store(true);
    });
  }
  ~DrainSet() {
    std::lock_guard<std::mutex> lock(mu_);
    for (Entry& e : entries_) {
      if (!e.done.load()) e.impl->Cut();
    }
    for (Entry& e : entries_) e.thread.join();
  }

 private:
  struct Entry {
    std::unique_ptr<CheckpointSender::Impl> impl;
    std::thread thread;
    std::atomic<bool> done{false};
  };
  void Reap() {
    for (auto it = entries_.begin(); it != entries_.end();) {
      if (it->done.load()) {
        it->thread.join();
        it = entries_.erase(it);
      } else {
        ++it;
      }
    }
  }
  std::mutex mu_;
  std::list<Entry> entries_;  // stable addresses: each thread points at its entry
};

}  // namespace

void StartDrain(std::unique_ptr<CheckpointSender::Impl> impl) { DrainSet::Get().Start(std::move(impl)); }

}  // namespace romulus::replicator
