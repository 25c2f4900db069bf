// Internal to CheckpointSender: the state shared by the thread driving the
// epochs and the sender's own threads. checkpoint_sender.cc has the
// handshake and the epoch encoding; sender_liveness.cc the threads that judge
// the backup's liveness, the wire writer and the drain of a given-up session.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <span>
#include <thread>
#include <vector>

#include "buffer/out_buffer.h"
#include "common/digest.h"
#include "compress/page_codec.h"
#include "protocol/frame.h"
#include "protocol/frame_io.h"
#include "replicator/checkpoint_sender.h"
#include "transport/stream.h"

namespace romulus::replicator {

struct CheckpointSender::Impl {
  using Clock = std::chrono::steady_clock;

  std::unique_ptr<transport::Stream> stream;
  SenderOptions opts;
  GuestInfo guest;
  std::unique_ptr<protocol::FrameWriter> writer;
  std::unique_ptr<buffer::OutBuffer> out;
  std::unique_ptr<compress::PageEncoder> encoder;
  std::unique_ptr<MemoryDigest> digest;

  // The PAGES frame being filled inside the OutBuffer: header space first.
  uint8_t* frame = nullptr;
  std::unique_ptr<compress::BatchWriter> batch;
  uint64_t batch_last_pfn = 0;  // pfns must increase within one batch

  // Epoch in progress (epoch thread only).
  uint64_t epoch = 0;
  bool in_epoch = false;
  EpochWireStats cur;
  uint64_t frames_in_epoch = 0, payload_in_epoch = 0;
  uint64_t bytes_at_epoch_start = 0;
  compress::KindCounters kinds_at_start;
  compress::CacheCounters cache_at_start;
  std::vector<uint8_t> scratch;

  // From the HELLO_ACK; constant for the session.
  uint64_t held_epoch = 0;  // the first epoch, when the backup sent its HELD table (0: none)
  uint64_t held_pages = 0;  // non-zero pages the backup said it holds
  bool can_resize = false;
  bool disk_sync = false;
  bool disk_delta = false;                     // kCapDiskDelta agreed
  std::vector<protocol::DiskHeld> disks_held;  // its HELLO_ACK's held disks
  std::vector<std::shared_ptr<const protocol::DiskChunkTable>> disk_digests;  // kCapDiskDigests
  uint64_t backup_max_cache_pages = 0;

  // Shared with the reader, heartbeat and wire threads (and the drain).
  mutable std::mutex mu;
  std::condition_variable cv;
  int64_t last_acked = -1;
  uint64_t expected_ack_digest = 0;
  uint64_t awaiting_epoch = 0;
  Clock::time_point end_sent{};
  std::chrono::microseconds ack_latency{0};
  Status failure;  // first failure; healthy while ok()
  std::atomic<bool> failed{false};  // failure is set (cheap check on the per-page path)
  bool stopping = false;  // clean stop, or the drain is over: every thread ends
  bool bye_received = false;
  bool bye_sent = false;  // our BYE is out: the backup's BYE or EOF is expected
  std::atomic<uint64_t> current_epoch{0};

  // The OutBuffer flush in the hands of the wire thread. The epoch thread
  // waits for it, or for the session to fail; a write still under way then
  // is finished by the drain, so the backup never gets half a frame.
  struct WireJob {
    std::span<const uint8_t> bytes;
    bool pending = false;
    Status result;
    Clock::time_point progress{};  // when the last group of frames went out
  } job;
  bool hb_writing = false;   // a heartbeat is inside a write
  bool reader_done = false;  // the reader reached the backup's EOF (or gave up reading)
  std::thread reader, heartbeat, wire;

  void Fail(const Status& st);
  // Fail() after a failed write, once the reader had a moment to bring the
  // backup's own reason (sender_liveness.cc).
  void FailAfterWriteError(const Status& st);
  Status CurrentFailure() {
    std::lock_guard<std::mutex> lock(mu);
    return failure;
  }

  Status Handshake();
  void StartThreads();
  void ReadLoop();
  bool ReadFrames();  // false: stop reading at once (clean stop)
  void DiscardUntilEof();
  void HeartbeatLoop();
  void WireLoop();
  Status WriteInGroups(std::span<const uint8_t> bytes);
  // The OutBuffer's flush: hands the bytes to the wire thread and waits while
  // they make progress (sender_liveness.cc).
  Status FlushToWire(std::span<const uint8_t> bytes);
  // After the session was given up: finish the frame on its way, send ERROR
  // kResync, half-close, read until the backup's EOF, all within
  // opts.drain_timeout; then close.
  void Drain();
  // Ends every thread's I/O at once (Shutdown) and makes them exit.
  void Cut();
  void JoinThreads();

  Status OpenBatch();
  Status CloseBatch();
  Status AppendFrame(protocol::FrameType type, std::span<const uint8_t> payload, uint8_t flags);
};

// Sessions given up and still draining in the background; the sender's
// destructor hands its state here. At process exit the drains still running
// are cut short (the kernel would close their sockets anyway).
void StartDrain(std::unique_ptr<CheckpointSender::Impl> impl);

}  // namespace romulus::replicator
