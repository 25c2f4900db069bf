#include "replicator/checkpoint_sender.h"

#include <spdlog/spdlog.h>
#include <time.h>

#include <algorithm>
#include <utility>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include "buffer/out_buffer.h"
#include "buffer/reusable_buffer.h"
#include "common/clock.h"
#include "common/digest.h"
#include "common/random_id.h"
#include "protocol/frame.h"
#include "protocol/frame_io.h"
#include "protocol/handshake.h"
#include "protocol/disk_digests.h"
#include "protocol/held_pages.h"
#include "protocol/messages.h"
#include "replicator/checkpoint_sender_impl.h"
#include "transport/stream.h"

namespace romulus::replicator {

using Clock = std::chrono::steady_clock;
using std::chrono::duration_cast;
using std::chrono::microseconds;
using protocol::FrameType;
using protocol::kFrameHeaderSize;

Status CheckpointSender::Impl::Handshake() {
  protocol::Hello hello;
  // Cache resizing is offered, never required: an older backup simply does
  // not agree, and `set cache-size` then waits for the next session.
  //
  // HELD is offered where the backup applies pages to an image it can
  // describe; a Xen stream needs every page for libxenguest's restore.
  hello.capabilities = guest.capabilities | protocol::kCapSimGuest | protocol::kCapCacheResize;
  if ((guest.capabilities & protocol::kCapXenStream) == 0 && opts.use_held_pages) {
    hello.capabilities |= protocol::kCapHeldPages;
  }
  hello.required = guest.capabilities;
  hello.cache_pages = opts.codec.cache_pages;
  hello.guest_pages = guest.guest_pages;
  hello.session_id = RandomNonZeroId();
  hello.first_epoch = guest.first_epoch;
  hello.heartbeat_ms = static_cast<uint32_t>(opts.heartbeat_interval.count());
  hello.peer_timeout_ms = static_cast<uint32_t>(opts.peer_timeout.count());
  hello.resync_reason = static_cast<protocol::ResyncReason>(guest.resync_reason);
  hello.identity = guest.identity;
  if (!guest.disks.empty()) {
    // Required: memory without its disk is not a checkpoint (DISK.md §4).
    hello.capabilities |= protocol::kCapDisk;
    hello.required |= protocol::kCapDisk;
    hello.disks = guest.disks;
    // Offered, never required: a backup that holds a checkpoint, or keeps
    // its disks where a partial copy cannot live, gets the in-pause copy.
    if (guest.offer_disk_sync) hello.capabilities |= protocol::kCapDiskSync;
    // Offered, never required: without it a disk copied whole is sent
    // whole (DISK.md §7.4).
    if (guest.offer_disk_digests) hello.capabilities |= protocol::kCapDiskDigests;
    // Offered, never required: a backup that cannot name what its disks
    // hold gets a whole copy (DISK.md §7.2).
    if (guest.disk_lineages.size() == guest.disks.size()) {
      hello.capabilities |= protocol::kCapDiskDelta;
      hello.disk_lineages = guest.disk_lineages;
    }
  }
  // Offered, never required: an older backup does not know the bit and
  // compares nothing (as before it existed).
  if (guest.xen_release != 0) {
    hello.capabilities |= protocol::kCapXenRelease;
    hello.xen_release = guest.xen_release;
  }
  // Offered, never required, and only where the HELLO still fits its
  // 1024 bytes (eight disks with long names and a long identity do not):
  // without it a backup restored from an older copy than the changes reach
  // is copied whole, uncompared (DISK.md §7.4).
  // Only with DISK_DIGESTS offered: the floors only say which disks to
  // describe.
  if ((hello.capabilities & protocol::kCapDiskDelta) != 0 && (hello.capabilities & protocol::kCapDiskDigests) != 0 &&
      !guest.disk_change_floors.empty() && guest.disk_change_floors.size() == guest.disks.size()) {
    protocol::Hello with_floors = hello;
    with_floors.capabilities |= protocol::kCapDiskFloor;
    with_floors.disk_change_floors = guest.disk_change_floors;
    if (with_floors.EncodedSize() <= protocol::MaxPayloadFor(static_cast<uint8_t>(FrameType::kHello))) {
      hello = std::move(with_floors);
    } else {
      spdlog::info("the HELLO has no room for the disks' change floors: a backup holding an older copy of a disk "
                   "than its changes reach gets it whole, uncompared");
    }
  }
  ROMULUS_RETURN_IF_ERROR(writer->Send(hello, 0));

  buffer::ReusableBuffer rb(1024, std::max(protocol::MaxPayloadFor(static_cast<uint8_t>(FrameType::kHeld)),
                                           protocol::MaxPayloadFor(static_cast<uint8_t>(FrameType::kDiskDigests))));
  protocol::FrameReader reader(stream.get(), &rb);
  auto frame = reader.Next(transport::DeadlineIn(std::chrono::milliseconds(10000)));
  if (!frame.ok()) {
    Status st = frame.status().With("waiting for the backup's HELLO_ACK");
    if (st.code() == Code::kClosed) {
      // A TLS backup drops a plaintext peer without a word (and the other
      // way round), so say what the likely cause is.
      return Status::Closed(st.message() +
                            " (the backup hung up before answering: a backup that requires TLS drops a "
                            "plaintext peer; both ends must use --psk-file/--cert, or both --insecure)");
    }
    return st;
  }
  if (frame->type() == FrameType::kError) {
    auto err = protocol::Error::Decode(frame->payload);
    return Status::Unsupported("backup refused: " +
                               (err.ok() ? protocol::Printable(err->text) : "malformed ERROR"));
  }
  if (frame->type() != FrameType::kHelloAck) {
    return Status::Corruption("expected HELLO_ACK, got " + protocol::FrameTypeName(frame->header.type));
  }
  auto ack = protocol::HelloAck::Decode(frame->payload);
  if (!ack.ok()) return ack.status();
  Status checked = protocol::CheckHelloAck(hello, *ack);
  if (!ack->accepted && ack->error == protocol::ErrorCode::kResource) {
    // One of the backup's bounds (cache or guest size): OutOfRange, so a
    // primary whose cache grew live can retry with its configured size.
    return Status::OutOfRange(checked.message());
  }
  ROMULUS_RETURN_IF_ERROR(checked);
  can_resize = ack->has_max_cache();
  disk_sync = ack->accepted && (ack->capabilities & protocol::kCapDiskSync) != 0;
  disk_delta = ack->has_disks_held();
  disks_held = ack->disks_held;
  backup_max_cache_pages = ack->max_cache_pages;
  if ((ack->capabilities & protocol::kCapHeldPages) != 0) {
    // Our digest starts as the backup's image: the first epoch then sends
    // only the pages whose hash differs (AddPage), and its EPOCH_END digest
    // covers the kept pages too.
    ROMULUS_RETURN_IF_ERROR(protocol::ReceiveHeldPages(&reader, digest.get(), std::chrono::milliseconds(10000)));
    held_epoch = guest.first_epoch;
    for (uint64_t pfn = 0; pfn < guest.guest_pages; ++pfn) held_pages += digest->hash(pfn) != 0;
  }
  disk_digests.clear();
  if ((ack->capabilities & protocol::kCapDiskDigests) != 0) {
    // The backup reads its disks for this: up to 256 MiB of disk per frame.
    auto tables = protocol::ReceiveDiskDigests(&reader, hello.disks, std::chrono::seconds(30));
    if (!tables.ok()) return tables.status();
    disk_digests = std::move(*tables);
  }
  return Status::Ok();
}

// Reserves a PAGES frame's worth of OutBuffer (flushing if needed) and points
// a BatchWriter just past the header slot.
Status CheckpointSender::Impl::OpenBatch() {
  auto p = out->Reserve(kFrameHeaderSize + opts.max_batch_bytes);
  if (!p.ok()) return p.status();
  frame = *p;
  batch = std::make_unique<compress::BatchWriter>(frame + kFrameHeaderSize, opts.max_batch_bytes);
  return Status::Ok();
}

Status CheckpointSender::Impl::CloseBatch() {
  if (!batch || batch->count() == 0) {
    batch.reset();
    return Status::Ok();
  }
  std::span<const uint8_t> payload(frame + kFrameHeaderSize, batch->size());
  protocol::EncodeFrameHeader(frame, FrameType::kPages, epoch, payload);
  out->Commit(kFrameHeaderSize + payload.size());
  ++frames_in_epoch;
  payload_in_epoch += payload.size();
  batch.reset();
  return Status::Ok();
}

Status CheckpointSender::Impl::AppendFrame(FrameType type, std::span<const uint8_t> payload,
                                           uint8_t flags) {
  auto p = out->Reserve(kFrameHeaderSize + payload.size());
  if (!p.ok()) return p.status();
  if (!payload.empty()) std::memcpy(*p + kFrameHeaderSize, payload.data(), payload.size());
  protocol::EncodeFrameHeader(*p, type, epoch, {*p + kFrameHeaderSize, payload.size()}, flags);
  out->Commit(kFrameHeaderSize + payload.size());
  return Status::Ok();
}

Result<std::unique_ptr<CheckpointSender>> CheckpointSender::Start(
    std::unique_ptr<transport::Stream> stream, const SenderOptions& opts, const GuestInfo& guest) {
  auto given = std::make_shared<std::unique_ptr<transport::Stream>>(std::move(stream));
  return Start([given]() -> Result<std::unique_ptr<transport::Stream>> { return std::move(*given); }, opts, guest);
}

Result<std::unique_ptr<CheckpointSender>> CheckpointSender::Start(const Connector& connect, const SenderOptions& opts,
                                                                  const GuestInfo& guest) {
  if (opts.max_batch_bytes < compress::kMaxEntryBytes ||
      opts.max_batch_bytes > protocol::MaxPayloadFor(static_cast<uint8_t>(FrameType::kPages)) ||
      opts.outbuf_bytes < opts.max_batch_bytes + kFrameHeaderSize) {
    return Status::InvalidArgument("sender: batch size must fit a page and the outbuf must fit a batch");
  }
  std::unique_ptr<CheckpointSender> s(new CheckpointSender());
  s->impl_ = std::make_unique<Impl>();
  Impl& im = *s->impl_;
  im.opts = opts;
  im.guest = guest;
  auto enc = compress::PageEncoder::Create(opts.codec, guest.guest_pages);
  if (!enc.ok()) return enc.status();
  im.encoder = std::move(*enc);
  auto dig = MemoryDigest::Create(guest.guest_pages);
  if (!dig.ok()) return dig.status();
  im.digest = std::move(*dig);
  // Flushes go through the wire thread (sender_liveness.cc): the epoch
  // thread can then give up on a stalled backup without cutting a frame.
  auto out = buffer::OutBuffer::Create(opts.outbuf_bytes,
                                       [&im](std::span<const uint8_t> bytes) { return im.FlushToWire(bytes); });
  if (!out.ok()) return out.status();
  im.out = std::move(*out);

  auto stream = connect();
  if (!stream.ok()) return stream.status();
  im.stream = std::move(*stream);
  im.writer = std::make_unique<protocol::FrameWriter>(im.stream.get());
  Status hs = im.Handshake();
  if (!hs.ok()) {
    im.stream->Shutdown();
    return hs.With("handshake with " + im.stream->Peer());
  }
  im.StartThreads();
  return s;
}

CheckpointSender::~CheckpointSender() {
  if (!impl_) return;
  bool clean = !impl_->reader.joinable();  // no session ever ran (handshake failed)
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    clean = clean || impl_->stopping;  // Stop() ran: BYE sent and answered (or timed out)
  }
  if (clean) {
    impl_->Cut();
    impl_->JoinThreads();
    return;
  }
  // Given up (or simply dropped): never vanish silently. The drain tells
  // the backup (ERROR resync) and reads its connection to the end in the
  // background, while the caller goes on (reconnects).
  StartDrain(std::move(impl_));
}

Status CheckpointSender::BeginEpoch(uint64_t epoch) {
  Impl& im = *impl_;
  ROMULUS_RETURN_IF_ERROR(im.CurrentFailure());
  if (im.in_epoch) return Status::Internal("BeginEpoch while epoch " + std::to_string(im.epoch) + " is open");
  im.epoch = epoch;
  im.current_epoch.store(epoch);
  im.in_epoch = true;
  im.cur = EpochWireStats{};
  im.cur.epoch = epoch;
  im.frames_in_epoch = 0;
  im.payload_in_epoch = 0;
  im.bytes_at_epoch_start = im.writer->bytes_written() + im.out->size();
  im.kinds_at_start = im.encoder->kinds();
  im.cache_at_start = im.encoder->cache().counters();
  return Status::Ok();
}

Status CheckpointSender::ResizeCache(uint64_t cache_pages, std::unique_ptr<compress::PageCache> fresh) {
  Impl& im = *impl_;
  if (!im.can_resize) return Status::Unsupported("the backup does not support live cache resizing");
  if (cache_pages > im.backup_max_cache_pages) {
    return Status::OutOfRange("cache of " + std::to_string(cache_pages) + " pages exceeds the backup's limit of " +
                              std::to_string(im.backup_max_cache_pages));
  }
  // The backup applies the resize before the epoch's first page, so it must
  // be the epoch's first frame.
  if (!im.in_epoch || im.batch || im.frames_in_epoch != 0 || im.cur.pages != 0) {
    return Status::Internal("ResizeCache must follow BeginEpoch directly");
  }
  compress::PageCache& cache = im.encoder->cache();
  if (!fresh || fresh->guest_pages() != cache.guest_pages() || fresh->size_pages() != 0 ||
      fresh->capacity_pages() != std::min(cache_pages, cache.guest_pages())) {
    return Status::InvalidArgument("ResizeCache: the new cache must be PageCache::Create(cache_pages, guest_pages)");
  }
  protocol::CacheResize msg;
  msg.cache_pages = cache_pages;
  ROMULUS_RETURN_IF_ERROR(msg.EncodeTo(&im.scratch));
  Status st = im.AppendFrame(FrameType::kCacheResize, im.scratch, 0);
  if (!st.ok()) {
    im.Fail(st);
    return st;
  }
  // Same operation as the backup's PageCache::Resize, minus the allocation
  // already done; checked above, so it cannot fail now.
  return cache.ResizeInto(std::move(fresh));
}

bool CheckpointSender::can_resize_cache() const { return impl_->can_resize; }
bool CheckpointSender::disk_sync_agreed() const { return impl_->disk_sync; }
bool CheckpointSender::disk_delta_agreed() const { return impl_->disk_delta; }
const std::vector<protocol::DiskHeld>& CheckpointSender::backup_disks_held() const { return impl_->disks_held; }
std::vector<std::shared_ptr<const protocol::DiskChunkTable>> CheckpointSender::TakeBackupDiskDigests() {
  return std::exchange(impl_->disk_digests, {});
}
uint64_t CheckpointSender::backup_max_cache_pages() const { return impl_->backup_max_cache_pages; }
bool CheckpointSender::backup_sent_held() const { return impl_->held_epoch != 0; }
uint64_t CheckpointSender::backup_held_pages() const { return impl_->held_pages; }
uint64_t CheckpointSender::epoch_pages_kept() const { return impl_->cur.pages_kept; }

bool CheckpointSender::SkipKnownZeroPage(uint64_t pfn) {
  Impl& im = *impl_;
  if (!im.in_epoch || im.epoch != im.held_epoch || pfn >= im.guest.guest_pages || im.digest->hash(pfn) != 0) {
    return false;
  }
  ++im.cur.pages_kept;
  return true;
}

Status CheckpointSender::AddPage(uint64_t pfn, const uint8_t* page) {
  Impl& im = *impl_;
  if (!im.in_epoch) return Status::Internal("AddPage outside an epoch");
  if (im.failed.load(std::memory_order_relaxed)) return im.CurrentFailure();
  if (pfn >= im.guest.guest_pages) {
    return Status::OutOfRange("pfn " + std::to_string(pfn) + " beyond the guest's " +
                              std::to_string(im.guest.guest_pages) + " pages");
  }
  auto t0 = Clock::now();
  const uint64_t hash = PageHash(pfn, page);
  if (im.epoch == im.held_epoch && im.digest->hash(pfn) == hash) {
    // The backup holds this page already (its HELD table, or this epoch's
    // earlier copy): nothing to send, and the digest counts it as it is.
    ++im.cur.pages_kept;
    return Status::Ok();
  }
  // A page sent again in the same epoch (full sync, then the paused part)
  // starts a new batch: pfns only increase within one.
  if (im.batch && im.batch->count() > 0 && pfn <= im.batch_last_pfn) {
    ROMULUS_RETURN_IF_ERROR(im.CloseBatch());
  }
  for (int attempt = 0; attempt < 3; ++attempt) {
    if (!im.batch) {
      Status st = im.OpenBatch();
      if (!st.ok()) {
        im.Fail(st);
        return st;
      }
    }
    Status st = im.encoder->Encode(pfn, page, im.batch.get());
    if (st.ok()) {
      im.batch_last_pfn = pfn;
      im.digest->SetHash(pfn, hash);
      ++im.cur.pages;
      im.cur.encode_time += duration_cast<microseconds>(Clock::now() - t0);
      return Status::Ok();
    }
    if (st.code() != Code::kOutOfRange) return st;
    // Batch full (or pfn went backwards: a new batch restarts the pfn
    // sequence): close it and open the next one.
    ROMULUS_RETURN_IF_ERROR(im.CloseBatch());
  }
  return Status::Internal("page " + std::to_string(pfn) + " does not fit an empty batch");
}

Status CheckpointSender::AddState(std::span<const uint8_t> record) {
  Impl& im = *impl_;
  if (!im.in_epoch) return Status::Internal("AddState outside an epoch");
  ROMULUS_RETURN_IF_ERROR(im.CloseBatch());
  const size_t max = std::min(protocol::MaxPayloadFor(static_cast<uint8_t>(FrameType::kState)),
                              im.opts.max_batch_bytes);
  size_t off = 0;
  do {
    size_t n = std::min(max, record.size() - off);
    bool more = off + n < record.size();
    Status st = im.AppendFrame(FrameType::kState, record.subspan(off, n), more ? protocol::kFlagMore : 0);
    if (!st.ok()) {
      im.Fail(st);
      return st;
    }
    ++im.frames_in_epoch;
    im.payload_in_epoch += n;
    off += n;
  } while (off < record.size());
  ++im.cur.state_records;
  im.cur.raw_bytes += record.size();
  return Status::Ok();
}

Status CheckpointSender::AddDiskFrame(std::span<const uint8_t> payload) {
  Impl& im = *impl_;
  if (!im.in_epoch) return Status::Internal("AddDiskFrame outside an epoch");
  if (im.guest.disks.empty()) return Status::InvalidArgument("DISK frame in a session without disks");
  ROMULUS_RETURN_IF_ERROR(im.CloseBatch());
  Status st = im.AppendFrame(FrameType::kDisk, payload, 0);
  if (!st.ok()) {
    im.Fail(st);
    return st;
  }
  im.cur.disk_wire_bytes += kFrameHeaderSize + payload.size();
  return Status::Ok();
}

Status CheckpointSender::AddDiskEnd(const protocol::DiskEnd& end) {
  Impl& im = *impl_;
  if (!im.in_epoch) return Status::Internal("AddDiskEnd outside an epoch");
  if (im.guest.disks.empty()) return Status::InvalidArgument("DISK_END in a session without disks");
  ROMULUS_RETURN_IF_ERROR(im.CloseBatch());
  ROMULUS_RETURN_IF_ERROR(end.EncodeTo(&im.scratch));
  Status st = im.AppendFrame(FrameType::kDiskEnd, im.scratch, 0);
  if (!st.ok()) {
    im.Fail(st);
    return st;
  }
  im.cur.disk_wire_bytes += kFrameHeaderSize + im.scratch.size();
  im.cur.disk_records += end.record_count;
  im.cur.disk_bytes += end.data_bytes;
  return Status::Ok();
}

Result<EpochWireStats> CheckpointSender::EndEpoch() {
  Impl& im = *impl_;
  if (!im.in_epoch) return Status::Internal("EndEpoch outside an epoch");
  ROMULUS_RETURN_IF_ERROR(im.CloseBatch());
  protocol::EpochEnd end;
  end.page_count = im.cur.pages;
  end.state_count = static_cast<uint32_t>(im.cur.state_records);
  end.frame_count = static_cast<uint32_t>(im.frames_in_epoch);
  end.payload_bytes = im.payload_in_epoch;
  end.digest = im.digest->value();
  ROMULUS_RETURN_IF_ERROR(end.EncodeTo(&im.scratch));
  {
    std::lock_guard<std::mutex> lock(im.mu);
    im.awaiting_epoch = im.epoch;
    im.expected_ack_digest = end.digest;
  }
  Status st = im.AppendFrame(FrameType::kEpochEnd, im.scratch, 0);
  EpochWireStats& w = im.cur;
  w.outbuf_high_water = im.out->high_water();
  if (st.ok()) st = im.out->Flush();
  im.in_epoch = false;
  if (!st.ok()) {
    im.Fail(st);
    return st;
  }
  {
    std::lock_guard<std::mutex> lock(im.mu);
    im.end_sent = Clock::now();
  }
  w.digest = end.digest;
  w.raw_bytes += w.pages * compress::kPageSize;
  w.wire_bytes = im.writer->bytes_written() - im.bytes_at_epoch_start;
  const auto& kinds = im.encoder->kinds();
  for (int k = 0; k < compress::kNumPageKinds; ++k) {
    w.pages_by_kind[k] = kinds.pages[k] - im.kinds_at_start.pages[k];
  }
  const auto& cc = im.encoder->cache().counters();
  w.cache_hits = cc.hits - im.cache_at_start.hits;
  w.cache_misses = cc.misses - im.cache_at_start.misses;
  w.cache_overflows = cc.overflows - im.cache_at_start.overflows;
  return w;
}

int64_t CheckpointSender::last_acked() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->last_acked;
}

std::chrono::microseconds CheckpointSender::last_ack_latency() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->ack_latency;
}

bool CheckpointSender::healthy() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->failure.ok();
}

Status CheckpointSender::failure() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->failure;
}

Status CheckpointSender::Stop(protocol::ByeReason reason, std::string text) {
  Impl& im = *impl_;
  if (Status failed = im.CurrentFailure(); !failed.ok()) {
    if (reason == protocol::ByeReason::kHandover) {
      // The guest is paused here for good and this primary never comes
      // back: the backup must not read ERROR resync (the drain's word for
      // "alive, reconnecting"), on which it would hold, and no copy of the
      // guest would run. The connection is cut instead: the backup fails
      // over from the final epoch after its timeout, fencing as configured.
      im.Cut();
    }
    return failed;
  }
  protocol::Bye bye;
  bye.reason = reason;
  if (text.empty()) {
    switch (reason) {
      case protocol::ByeReason::kHandover: text = "planned switchover: backup takes over"; break;
      case protocol::ByeReason::kGuestShutdown: text = "the guest stopped"; break;
      default: text = "replication stopped by operator"; break;
    }
  }
  if (text.size() > protocol::kMaxShortText) {
    // Cut at a character boundary, with an ellipsis ("..." fits: 253 + 3).
    size_t cut = protocol::kMaxShortText - 3;
    while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
    text.resize(cut);
    text += "...";
  }
  bye.text = std::move(text);
  int64_t last = last_acked();
  {
    std::lock_guard<std::mutex> lock(im.mu);
    im.bye_sent = true;
  }
  Status st = im.writer->Send(bye, last < 0 ? 0 : static_cast<uint64_t>(last));
  // Give the backup a moment to answer BYE so it logs a clean stop; the
  // reader thread sees its BYE or EOF.
  {
    std::unique_lock<std::mutex> lock(im.mu);
    im.cv.wait_for(lock, im.opts.peer_timeout, [&] { return im.bye_received || !im.failure.ok(); });
    im.stopping = true;
  }
  im.cv.notify_all();
  im.stream->Shutdown();
  return st;
}

std::vector<uint64_t> CheckpointSender::RegionSums(uint32_t regions) const {
  const uint64_t pages = impl_->digest->guest_pages();
  regions = std::max<uint32_t>(1, regions);
  const uint64_t per = pages / regions;
  std::vector<uint64_t> out(regions);
  for (uint32_t i = 0; i < regions; ++i) {
    uint64_t first = i * per;
    out[i] = impl_->digest->RangeSum(first, i + 1 == regions ? pages - first : per);
  }
  return out;
}

uint64_t CheckpointSender::guest_pages() const { return impl_->digest->guest_pages(); }

const compress::PageCache& CheckpointSender::cache() const { return impl_->encoder->cache(); }

}  // namespace romulus::replicator
