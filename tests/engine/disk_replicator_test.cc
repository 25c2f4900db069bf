// The primary's disk replication end to end in one process: a simulated
// guest with a disk writes through disk::RequestExecutor into an
// EpochDiskLog; DiskReplicator seals each epoch and the CheckpointSender
// writes DISK / DISK_END frames; a test backup parses them with
// protocol::DiskFrameParser, checks each DISK_END against its own digest,
// applies the records to its copy, and sim::CheckSimDisk proves that copy
// holds exactly the records the guest's state says it wrote.
#include "replicator/disk_replicator.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <libnbd.h>
#include <unistd.h>

#include <cstring>
#include <random>
#include <future>
#include <map>
#include <thread>

#include "buffer/reusable_buffer.h"
#include "disk/disk_export.h"
#include "disk/epoch_clock.h"
#include "disk/epoch_disk_log.h"
#include "disk/local_disk_tap.h"
#include "disk/remote_disk_tap.h"
#include "protocol/disk_digests.h"
#include "protocol/disk_records.h"
#include "protocol/frame_io.h"
#include "protocol/messages.h"
#include "replicator/checkpoint_sender.h"
#include "replicator/output_commit.h"
#include "replicator/primary_controller.h"
#include "replicator/timer_driver.h"
#include "sim/sim_disk.h"
#include "sim/sim_guest.h"
#include "tests/disk/disk_test_util.h"
#include "tests/engine/stream_pair.h"

namespace romulus::replicator {
namespace {

using namespace std::chrono_literals;
using protocol::FrameType;
using transport::DeadlineIn;

constexpr auto kBound = 20s;  // a liveness bound only: the tests never wait it out when the code is right

// A backup that checks and applies the disk part of every epoch.
class DiskBackup {
 public:
  explicit DiskBackup(std::unique_ptr<transport::Stream> s)
      : stream_(std::move(s)), writer_(stream_.get()), rb_(4096, 16u << 20), reader_(stream_.get(), &rb_) {}

  // agree_digests: the backup's disks start as `seed` (an old copy) and it
  // describes them with DISK_DIGESTS (docs/DISK.md §7.4).
  Status Handshake(bool agree_disk, bool agree_sync = false, bool agree_digests = false,
                   std::map<uint32_t, std::vector<uint8_t>> seed = {}) {
    sync_agreed_ = agree_sync;
    auto f = reader_.Next(DeadlineIn(kBound));
    if (!f.ok()) return f.status();
    auto hello = protocol::Hello::Decode(f->payload);
    if (!hello.ok()) return hello.status();
    hello_ = *hello;
    for (const auto& d : hello_.disks) {
      image_[d.id] = seed.count(d.id) != 0 ? seed[d.id] : std::vector<uint8_t>(d.size_bytes, 0);
    }
    protocol::HelloAck ack;
    ack.accepted = true;
    ack.capabilities = (hello->required | protocol::kCapSimGuest) & (agree_disk ? ~uint64_t{0} : ~protocol::kCapDisk);
    if (agree_sync) ack.capabilities |= hello->capabilities & protocol::kCapDiskSync;
    if (agree_digests) ack.capabilities |= hello->capabilities & protocol::kCapDiskDigests;
    ack.session_id = hello->session_id;
    ROMULUS_RETURN_IF_ERROR(writer_.Send(ack, 0));
    if ((ack.capabilities & protocol::kCapDiskDigests) == 0) return Status::Ok();
    return protocol::SendDiskDigests(
        &writer_, hello_.disks,
        [&](size_t i, uint64_t first, std::span<protocol::ChunkHash> out) {
          const std::vector<uint8_t>& img = image_[hello_.disks[i].id];
          for (size_t k = 0; k < out.size(); ++k) {
            const uint64_t at = (first + k) * protocol::kDiskChunkBytes;
            out[k] = protocol::DiskChunkHash(std::span<const uint8_t>(img).subspan(
                at, std::min<uint64_t>(protocol::kDiskChunkBytes, img.size() - at)));
          }
          return Status::Ok();
        },
        kBound);
  }

  // Reads one epoch up to EPOCH_END, applying its disk records; Corruption
  // if a DISK_END disagrees with what arrived or a disk has none.
  Status ReadEpoch(uint64_t* disk_frames = nullptr) {
    state_.clear();
    std::map<uint32_t, bool> ended;
    for (auto& [id, d] : digests_) d.Reset();
    for (;;) {
      auto f = reader_.Next(DeadlineIn(kBound));
      if (!f.ok()) return f.status();
      switch (f->type()) {
        case FrameType::kDisk: {
          if (disk_frames) ++*disk_frames;
          ROMULUS_RETURN_IF_ERROR(parser_.Open(f->payload, hello_.disks));
          const uint32_t id = parser_.disk_id();
          if (ended[id]) return Status::Corruption("DISK after DISK_END");
          protocol::DiskRecord r;
          while (parser_.Next(&r)) {
            digests_[id].Add(r);
            std::vector<uint8_t>& img = image_[id];
            if (r.kind == protocol::DiskRecordKind::kWrite) {
              std::memcpy(img.data() + r.offset, r.data.data(), r.length);
            } else if (r.kind == protocol::DiskRecordKind::kZero) {
              std::memset(img.data() + r.offset, 0, r.length);
            }
            ++kinds_[static_cast<int>(r.kind) * 4 + (r.fua() ? 1 : 0) + (r.trim() ? 2 : 0)];
          }
          break;
        }
        case FrameType::kDiskEnd: {
          auto end = protocol::DiskEnd::Decode(f->payload, sync_agreed_);
          if (!end.ok()) return end.status();
          sync_state_[end->disk_id] = end->sync_state;
          protocol::DiskRecordDigest& d = digests_[end->disk_id];
          if (end->record_count != d.records() || end->data_bytes != d.data_bytes() || end->digest != d.value()) {
            return Status::Corruption("DISK_END of disk " + std::to_string(end->disk_id) + " disagrees: " +
                                      std::to_string(end->record_count) + " records vs " +
                                      std::to_string(d.records()) + " received");
          }
          ended[end->disk_id] = true;
          break;
        }
        case FrameType::kEpochEnd: {
          for (const auto& disk : hello_.disks) {
            if (!ended[disk.id]) return Status::Corruption("no DISK_END for disk " + std::to_string(disk.id));
          }
          auto ee = protocol::EpochEnd::Decode(f->payload);
          if (!ee.ok()) return ee.status();
          epoch_ = f->header.epoch;
          epoch_digest_ = ee->digest;
          return Status::Ok();
        }
        case FrameType::kState:
          state_.insert(state_.end(), f->payload.begin(), f->payload.end());
          break;
        case FrameType::kBye: {
          // Answered, as a backup does: the primary's Stop waits for it.
          protocol::Bye bye;
          bye.reason = protocol::ByeReason::kBackupStopping;
          (void)writer_.Send(bye, 0, DeadlineIn(kBound));
          return Status::Closed("BYE");
        }
        case FrameType::kPages:
        case FrameType::kHeartbeat:
        case FrameType::kCacheResize:
          break;
        default:
          return Status::Corruption("unexpected " + protocol::FrameTypeName(f->header.type));
      }
    }
  }

  // Acks the epoch just read (the primary checks the digest).
  Status Ack() {
    protocol::Ack a;
    a.epoch = epoch_;
    a.digest = epoch_digest_;
    return writer_.Send(a, epoch_, DeadlineIn(kBound));
  }
  void Close() { stream_->Shutdown(); }
  const std::vector<uint8_t>& state() const { return state_; }
  uint64_t epoch() const { return epoch_; }

  const protocol::Hello& hello() const { return hello_; }
  const std::vector<uint8_t>& image(uint32_t id) { return image_[id]; }
  // The last DISK_END's sync state of a disk.
  uint32_t sync_state(uint32_t id) { return sync_state_[id]; }
  // Records seen per (kind, fua, trim).
  std::map<int, uint64_t> kinds_;

 private:
  std::unique_ptr<transport::Stream> stream_;
  protocol::FrameWriter writer_;
  buffer::ReusableBuffer rb_;
  protocol::FrameReader reader_;
  protocol::Hello hello_;
  protocol::DiskFrameParser parser_;
  std::vector<uint8_t> state_;  // the epoch's STATE bytes (the sim guest's blob)
  uint64_t epoch_ = 0, epoch_digest_ = 0;
  std::map<uint32_t, std::vector<uint8_t>> image_;
  std::map<uint32_t, protocol::DiskRecordDigest> digests_;
  std::map<uint32_t, uint32_t> sync_state_;
  bool sync_agreed_ = false;
};

SenderOptions Options() {
  SenderOptions o;
  o.codec.cache_pages = 256;
  o.outbuf_bytes = 8u << 20;
  o.heartbeat_interval = 50ms;
  o.peer_timeout = kBound;
  o.write_timeout = kBound;
  o.drain_timeout = 100ms;  // the test backup never closes: do not wait for it after the test
  return o;
}

struct Primary {
  sim::SimSpec spec;
  disk::testing::TempDir dir;
  disk::EpochCounter clock;
  disk::EpochDiskLog log{0, nullptr};
  std::unique_ptr<sim::SimGuest> guest;
  std::unique_ptr<disk::LocalDiskTap> tap;
  std::unique_ptr<DiskReplicator> disks;
  protocol::DiskInfo info;

  // stream: the tap can stream its copy (the writer's gate is its hold).
  explicit Primary(const std::string& text, bool stream = false, disk::SyncCopierOptions sync = {}) {
    auto s = sim::ParseSimSpec(text);
    EXPECT_TRUE(s.ok());
    spec = *s;
    auto g = sim::SimGuest::Create(spec);
    EXPECT_TRUE(g.ok());
    guest = std::move(*g);
    const std::string path = dir.path() + "/disk.img";
    EXPECT_TRUE(sim::SimGuest::CreateDiskFile(path, spec.disk_bytes).ok());
    Status st = guest->OpenDisk(path, &clock, &log);
    EXPECT_TRUE(st.ok()) << st.ToString();
    log.AttachStore(guest->disk_store());
    info = protocol::DiskInfo{3, spec.disk_bytes, "xvdb"};
    tap = std::make_unique<disk::LocalDiskTap>(info, guest->disk_store(), &clock, &log,
                                               stream ? guest->disk_hold() : nullptr, sync);
    disks = std::make_unique<DiskReplicator>(std::vector<disk::DiskTap*>{tap.get()});
  }
  ~Primary() { tap->StopSync(); }
};

// The backup's copy of the disk is exactly what the guest's state (captured
// at the pause) says it wrote: every record up to it, none beyond.
Status CheckBackupDisk(const Primary& p, DiskBackup& backup, std::span<const uint8_t> state) {
  auto n = sim::SimDiskRecordsInState(state);
  if (!n.ok()) return n.status();
  const std::vector<uint8_t>& img = backup.image(p.info.id);
  return sim::CheckSimDisk(p.spec, *n, [&](uint64_t off, std::span<uint8_t> out) {
           std::memcpy(out.data(), img.data() + off, out.size());
           return Status::Ok();
         }).With(std::to_string(*n) + " records");
}

// kCapDiskSync (DISK.md §7.1): the first epoch starts a streaming copy that
// runs beside the guest. Every epoch says how far it got; the backup's copy
// is exactly the disk at an epoch's pause from the first epoch that says
// "whole" on, and WholeAt agrees. The copy is paced (64 KiB chunks, 256 KiB
// of data per epoch; holes are free), so it spans several epochs.
TEST(DiskReplicator, AStreamedCopyIsTheDiskAtThePauseFromItsFirstWholeEpoch) {
  disk::SyncCopierOptions sync;
  sync.chunk_bytes = 64 << 10;
  sync.epoch_allowance = 256 << 10;
  Primary p("sim:size=1M,workload=sequential,seed=9,disk=4M", /*stream=*/true, sync);
  ASSERT_TRUE(p.disks->can_stream());
  auto pair = test_engine::MakeStreamPair();
  DiskBackup backup(std::move(pair.backup));
  GuestInfo gi;
  gi.guest_pages = p.guest->guest_pages();
  gi.identity = p.spec.ToString();
  gi.disks = p.disks->infos();
  gi.offer_disk_sync = p.disks->can_stream();
  auto hs = std::async(std::launch::async, [&] { return backup.Handshake(true, /*agree_sync=*/true); });
  auto sender = CheckpointSender::Start(std::move(pair.primary), Options(), gi);
  ASSERT_TRUE(hs.get().ok());
  ASSERT_TRUE(sender.ok()) << sender.status().ToString();
  EXPECT_NE(backup.hello().capabilities & protocol::kCapDiskSync, 0u);
  EXPECT_EQ(backup.hello().required & protocol::kCapDiskSync, 0u);  // offered, never required
  ASSERT_TRUE((*sender)->disk_sync_agreed());

  // Data on the disk before the session: only the copy can carry it.
  ASSERT_TRUE(p.guest->RunSteps(4 * 300).ok());
  uint64_t first_whole = 0;
  uint32_t last_state = 1;
  const auto deadline = std::chrono::steady_clock::now() + kBound;
  uint64_t epoch = 1;
  for (; first_whole == 0 || epoch <= first_whole + 3; ++epoch) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "the copy never completed (epoch " << epoch << ")";
    ASSERT_TRUE((*sender)->BeginEpoch(epoch).ok());
    ASSERT_TRUE(p.guest->RunSteps(4 * (1 + epoch % 5)).ok());
    std::vector<uint8_t> state;
    ASSERT_TRUE(p.guest->CaptureState(&state).ok());
    ASSERT_TRUE(p.disks->Paused(epoch, epoch == 1, replicator::DiskSessionCopy{/*stream=*/true, {}}).ok());
    ASSERT_TRUE(p.guest->RunSteps(4).ok());  // after the pause: the next epoch's
    ASSERT_TRUE((*sender)->AddState(state).ok());
    // Read while it is sent: an epoch of the copy outgrows the socket's buffer.
    auto got = std::async(std::launch::async, [&] { return backup.ReadEpoch(); });
    Status st = p.disks->SendEpoch(epoch, **sender, std::chrono::steady_clock::now() + kBound, nullptr);
    if (st.ok()) st = (*sender)->EndEpoch().status();
    if (!st.ok()) backup.Close();  // so the reader ends
    Status read = got.get();
    ASSERT_TRUE(st.ok()) << "epoch " << epoch << ": " << st.ToString();
    ASSERT_TRUE(read.ok()) << "epoch " << epoch << ": " << read.ToString();
    const uint32_t s = backup.sync_state(p.info.id);
    if (epoch == 1) {
      EXPECT_EQ(s, protocol::SyncStateOfPermille(0)) << "the first epoch carries nothing of the copy";
    }
    if (first_whole != 0) {
      EXPECT_EQ(s, protocol::kSyncWhole) << "epoch " << epoch << ": whole once, whole for the session";
    } else if (s == protocol::kSyncWhole) {
      first_whole = epoch;
    } else {
      EXPECT_GE(s, last_state) << "epoch " << epoch << ": the copy went backwards";
      last_state = s;
    }
    EXPECT_EQ(p.disks->WholeAt(epoch), first_whole != 0) << epoch;
    if (first_whole == 0) continue;
    Status check = CheckBackupDisk(p, backup, state);
    ASSERT_TRUE(check.ok()) << "epoch " << epoch << ": " << check.ToString();
  }
  // About 1.2 MiB of data (300 records) at no more than 256 KiB an epoch,
  // after a first epoch that carries none of the copy; the rest of the
  // 4 MiB is a hole, which costs no allowance.
  EXPECT_GE(first_whole, 5u);
  EXPECT_EQ(p.disks->sync_permille(), 1000u);
}

// kCapDiskDigests through the engine (DISK.md §7.4): the backup holds an
// old copy of the disk that differs in one chunk; the session's in-pause
// copy carries only the chunks that differ (that one, and those the guest
// wrote since the copy was taken), and the backup's disk is then exactly
// the guest's at the pause.
TEST(DiskReplicator, AnInPauseCopyAgainstAnOldCopyCarriesOnlyWhatDiffers) {
  Primary p("sim:size=1M,workload=sequential,seed=9,disk=6M");
  ASSERT_TRUE(p.disks->can_compare());
  // Data before the session, then the backup's old copy of it, one chunk off.
  ASSERT_TRUE(p.guest->RunSteps(4 * 600).ok());
  std::vector<uint8_t> old(p.info.size_bytes);
  {
    const int fd = ::open((p.dir.path() + "/disk.img").c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::pread(fd, old.data(), old.size(), 0), static_cast<ssize_t>(old.size()));
    ::close(fd);
  }
  old[4 * protocol::kDiskChunkBytes + 100] ^= 0x42;
  auto pair = test_engine::MakeStreamPair();
  DiskBackup backup(std::move(pair.backup));
  GuestInfo gi;
  gi.guest_pages = p.guest->guest_pages();
  gi.identity = p.spec.ToString();
  gi.disks = p.disks->infos();
  gi.offer_disk_digests = p.disks->can_compare();
  auto hs = std::async(std::launch::async, [&] {
    return backup.Handshake(true, false, /*agree_digests=*/true, {{p.info.id, old}});
  });
  auto sender = CheckpointSender::Start(std::move(pair.primary), Options(), gi);
  Status handshake = hs.get();
  ASSERT_TRUE(handshake.ok()) << handshake.ToString();
  ASSERT_TRUE(sender.ok()) << sender.status().ToString();
  std::vector<std::shared_ptr<const protocol::DiskChunkTable>> tables = (*sender)->TakeBackupDiskDigests();
  ASSERT_EQ(tables.size(), 1u);
  ASSERT_TRUE(tables[0]);
  EXPECT_TRUE((*sender)->TakeBackupDiskDigests().empty()) << "taken once";
  // The guest writes on before the pause: chunk 0 changes too.
  ASSERT_TRUE(p.guest->RunSteps(8).ok());
  ASSERT_TRUE((*sender)->BeginEpoch(1).ok());
  std::vector<uint8_t> state;
  ASSERT_TRUE(p.guest->CaptureState(&state).ok());
  replicator::DiskSessionCopy copy;
  copy.digests = std::move(tables);
  ASSERT_TRUE(p.disks->Paused(1, true, copy).ok());
  ASSERT_TRUE((*sender)->AddState(state).ok());
  auto got = std::async(std::launch::async, [&] { return backup.ReadEpoch(); });
  DiskEpochStats ds;
  Status st = p.disks->SendEpoch(1, **sender, std::chrono::steady_clock::now() + kBound, &ds);
  if (st.ok()) st = (*sender)->EndEpoch().status();
  if (!st.ok()) backup.Close();
  Status read = got.get();
  ASSERT_TRUE(st.ok()) << st.ToString();
  ASSERT_TRUE(read.ok()) << read.ToString();
  Status check = CheckBackupDisk(p, backup, state);
  ASSERT_TRUE(check.ok()) << check.ToString();
  // Only the two differing chunks crossed (2400 records of 4 KiB wrap the
  // 6 MiB disk: every chunk holds records, so a chunk wrongly left out
  // fails the check above).
  EXPECT_GT(ds.data_bytes, 0u);
  EXPECT_LE(ds.data_bytes, 2 * protocol::kDiskChunkBytes);
  EXPECT_EQ(p.tap->skipped_bytes(), p.info.size_bytes - 2 * protocol::kDiskChunkBytes);
}

TEST(DiskReplicator, EveryEpochsDiskArrivesWhole) {
  Primary p("sim:size=1M,workload=sequential,seed=5,disk=64K");  // 16 blocks: the writer wraps
  auto pair = test_engine::MakeStreamPair();
  DiskBackup backup(std::move(pair.backup));
  GuestInfo gi;
  gi.guest_pages = p.guest->guest_pages();
  gi.identity = p.spec.ToString();
  gi.disks = p.disks->infos();
  auto hs = std::async(std::launch::async, [&] { return backup.Handshake(true); });
  auto sender = CheckpointSender::Start(std::move(pair.primary), Options(), gi);
  ASSERT_TRUE(hs.get().ok());
  ASSERT_TRUE(sender.ok()) << sender.status().ToString();
  ASSERT_EQ(backup.hello().disks.size(), 1u);
  EXPECT_EQ(backup.hello().disks[0], p.info);
  EXPECT_NE(backup.hello().required & protocol::kCapDisk, 0u);

  // Records before the session: the first epoch's full copy carries them.
  ASSERT_TRUE(p.guest->RunSteps(4 * 5).ok());
  ASSERT_EQ(p.guest->disk_records(), 5u);
  uint64_t frames = 0;
  for (uint64_t epoch = 1; epoch <= 12; ++epoch) {
    ASSERT_TRUE((*sender)->BeginEpoch(epoch).ok());
    // A varying number of records per epoch, some epochs with none.
    ASSERT_TRUE(p.guest->RunSteps(epoch % 4 == 0 ? 1 : 4 * (epoch % 7)).ok());
    std::vector<uint8_t> state;
    ASSERT_TRUE(p.guest->CaptureState(&state).ok());
    ASSERT_TRUE(p.disks->Paused(epoch, epoch == 1).ok());
    // Writes after the pause (the guest resumed) belong to the next epoch
    // and must not reach the backup in this one.
    ASSERT_TRUE(p.guest->RunSteps(4).ok());
    ASSERT_TRUE((*sender)->AddState(state).ok());
    DiskEpochStats ds;
    Status st = p.disks->SendEpoch(epoch, **sender, std::chrono::steady_clock::now() + kBound, &ds);
    ASSERT_TRUE(st.ok()) << st.ToString();
    auto w = (*sender)->EndEpoch();
    ASSERT_TRUE(w.ok()) << w.status().ToString();
    EXPECT_EQ(w->disk_records, ds.records);
    EXPECT_GT(w->disk_wire_bytes, 0u);  // at least the DISK_END
    Status got = backup.ReadEpoch(&frames);
    ASSERT_TRUE(got.ok()) << "epoch " << epoch << ": " << got.ToString();
    // The backup's copy is exactly what the guest's state says it wrote.
    Status check = CheckBackupDisk(p, backup, state);
    ASSERT_TRUE(check.ok()) << "epoch " << epoch << ": " << check.ToString();
  }
  EXPECT_GT(frames, 0u);
  // Every record kind travelled: WRITE (+FUA), ZERO, ZERO+TRIM, FLUSH.
  auto kind = [](protocol::DiskRecordKind k, bool fua, bool trim) { return static_cast<int>(k) * 4 + fua + 2 * trim; };
  EXPECT_GT(backup.kinds_[kind(protocol::DiskRecordKind::kWrite, false, false)], 0u);
  EXPECT_GT(backup.kinds_[kind(protocol::DiskRecordKind::kWrite, true, false)], 0u);
  EXPECT_GT(backup.kinds_[kind(protocol::DiskRecordKind::kZero, false, false)], 0u);
  EXPECT_GT(backup.kinds_[kind(protocol::DiskRecordKind::kZero, false, true)], 0u);
  EXPECT_GT(backup.kinds_[kind(protocol::DiskRecordKind::kFlush, false, false)], 0u);
}

// The Xen guest's path: a `romulus disk-export` (in process here) serves
// the disk to an NBD client (libnbd standing in for the kernel's), the
// replicator reaches it through RemoteDiskTap, and the backup's copy after
// each epoch is exactly the disk as it was at that epoch's pause: every
// write completed before the pause, none after it.
// stream: the session's copy is the export's streaming copy (64 KiB chunks,
// 128 KiB an epoch, so 1 MiB takes 8 epochs after the first): the backup's
// disk is the disk at the pause from the first epoch whose SEALED says whole,
// and the earlier epochs say how far the copy got.
void ThroughADiskExport(bool stream) {
  disk::testing::TempDir dir;
  const std::string path = dir.path() + "/disk.img";
  constexpr uint64_t kSize = 1 << 20;
  {
    // Data already on the disk before replication: the full copy carries it.
    std::vector<uint8_t> init(kSize, 0);
    for (size_t i = 0; i < 64 * 1024; ++i) init[i] = static_cast<uint8_t>(i * 7 + 1);
    int fd = ::open(path.c_str(), O_CREAT | O_TRUNC | O_WRONLY, 0600);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::pwrite(fd, init.data(), init.size(), 0), static_cast<ssize_t>(init.size()));
    ::close(fd);
  }
  disk::DiskExportOptions eo;
  eo.store_path = path;
  eo.name = "xvdb";
  eo.nbd_socket = dir.path() + "/nbd.sock";
  eo.tap_socket = dir.path() + "/tap.sock";
  eo.tap.sync.chunk_bytes = 64 << 10;
  eo.tap.sync.epoch_allowance = 128 << 10;
  auto ex = disk::DiskExport::Open(eo);
  ASSERT_TRUE(ex.ok()) << ex.status().ToString();
  ASSERT_TRUE((*ex)->Start().ok());
  nbd_handle* h = nbd_create();
  ASSERT_NE(h, nullptr);
  ASSERT_EQ(nbd_set_export_name(h, "xvdb"), 0);
  ASSERT_EQ(nbd_connect_unix(h, eo.nbd_socket.c_str()), 0) << nbd_get_error();
  disk::RemoteDiskTapOptions to;
  to.disk_id = 2;
  auto tap = disk::RemoteDiskTap::Connect(eo.tap_socket, to);
  ASSERT_TRUE(tap.ok()) << tap.status().ToString();
  EXPECT_EQ((*tap)->info(), (protocol::DiskInfo{2, kSize, "xvdb"}));
  DiskReplicator disks({tap->get()});
  ASSERT_TRUE(disks.can_stream());

  auto pair = test_engine::MakeStreamPair();
  DiskBackup backup(std::move(pair.backup));
  GuestInfo gi;
  gi.guest_pages = 16;
  gi.identity = "export-test";
  gi.disks = disks.infos();
  gi.offer_disk_sync = disks.can_stream();
  auto hs = std::async(std::launch::async, [&] { return backup.Handshake(true, stream); });
  auto sender = CheckpointSender::Start(std::move(pair.primary), Options(), gi);
  ASSERT_TRUE(hs.get().ok());
  ASSERT_TRUE(sender.ok()) << sender.status().ToString();
  ASSERT_EQ((*sender)->disk_sync_agreed(), stream);

  auto file_now = [&] {
    std::vector<uint8_t> img(kSize);
    int fd = ::open(path.c_str(), O_RDONLY);
    EXPECT_GE(fd, 0);
    EXPECT_EQ(::pread(fd, img.data(), img.size(), 0), static_cast<ssize_t>(img.size()));
    ::close(fd);
    return img;
  };
  std::mt19937_64 rng(11);
  std::vector<uint8_t> block(4096);
  auto write_some = [&](int n) {
    for (int i = 0; i < n; ++i) {
      const uint64_t off = (rng() % (kSize / 4096)) * 4096;
      switch (rng() % 5) {
        case 0:  // a block of zeros travels as a ZERO record
          std::fill(block.begin(), block.end(), 0);
          ASSERT_EQ(nbd_pwrite(h, block.data(), block.size(), off, 0), 0) << nbd_get_error();
          break;
        case 1:
          ASSERT_EQ(nbd_trim(h, 8192, off & ~uint64_t{8191}, 0), 0) << nbd_get_error();
          break;
        case 2:
          ASSERT_EQ(nbd_flush(h, 0), 0) << nbd_get_error();
          break;
        default:
          for (auto& b : block) b = static_cast<uint8_t>(rng());
          ASSERT_EQ(nbd_pwrite(h, block.data(), block.size(), off, (rng() & 1) ? LIBNBD_CMD_FLAG_FUA : 0), 0)
              << nbd_get_error();
      }
    }
  };
  write_some(8);  // before the session: part of the session's copy
  uint64_t first_whole = 0;
  for (uint64_t epoch = 1; epoch <= 14; ++epoch) {
    ASSERT_TRUE((*sender)->BeginEpoch(epoch).ok());
    write_some(static_cast<int>(epoch % 4) * 5);  // some epochs write nothing
    const std::vector<uint8_t> at_pause = file_now();
    Status paused = disks.Paused(epoch, epoch == 1, replicator::DiskSessionCopy{stream, {}});
    ASSERT_TRUE(paused.ok()) << paused.ToString();
    write_some(3);  // after the pause: the next epoch's
    const std::vector<uint8_t> state = {1, 2, 3};
    ASSERT_TRUE((*sender)->AddState(state).ok());
    Status st = disks.SendEpoch(epoch, **sender, std::chrono::steady_clock::now() + kBound, nullptr);
    ASSERT_TRUE(st.ok()) << "epoch " << epoch << ": " << st.ToString();
    auto w = (*sender)->EndEpoch();
    ASSERT_TRUE(w.ok()) << w.status().ToString();
    Status got = backup.ReadEpoch();
    ASSERT_TRUE(got.ok()) << "epoch " << epoch << ": " << got.ToString();
    const bool whole = backup.sync_state(2) == protocol::kSyncWhole;
    if (!stream) {
      ASSERT_TRUE(whole);
    }
    if (whole && first_whole == 0) first_whole = epoch;
    if (first_whole != 0) {
      ASSERT_TRUE(whole) << "epoch " << epoch << ": whole once, whole for the session";
      ASSERT_TRUE(backup.image(2) == at_pause) << "epoch " << epoch << ": the backup's disk is not the disk at the pause";
    }
    EXPECT_EQ(disks.WholeAt(epoch), first_whole != 0) << epoch;
  }
  // 1 MiB at 128 KiB an epoch: whole at epoch 9 at the earliest.
  if (stream) {
    EXPECT_GE(first_whole, 9u);
    EXPECT_EQ((*ex)->stats().tap.streamed_copies, 1u);
  } else {
    EXPECT_EQ(first_whole, 1u);
  }
  ASSERT_NE(first_whole, 0u) << "the copy never completed";
  (void)nbd_shutdown(h, 0);
  nbd_close(h);
}

TEST(DiskReplicator, ThroughADiskExportEachEpochIsTheDiskAtItsPause) { ThroughADiskExport(false); }
TEST(DiskReplicator, ThroughADiskExportAStreamedCopyIsTheDiskAtThePauseOnceWhole) { ThroughADiskExport(true); }

TEST(DiskReplicator, ABackupWithoutDisksRefusesTheSession) {
  Primary p("sim:size=1M,workload=seed,disk=64K");
  auto pair = test_engine::MakeStreamPair();
  DiskBackup backup(std::move(pair.backup));
  GuestInfo gi;
  gi.guest_pages = p.guest->guest_pages();
  gi.identity = p.spec.ToString();
  gi.disks = p.disks->infos();
  auto hs = std::async(std::launch::async, [&] { return backup.Handshake(/*agree_disk=*/false); });
  auto sender = CheckpointSender::Start(std::move(pair.primary), Options(), gi);
  ASSERT_TRUE(hs.get().ok());
  EXPECT_FALSE(sender.ok()) << "a session without the disk would replicate memory alone";
}

TEST(DiskReplicator, OverBudgetEpochEndsTheSessionWithoutPartialData) {
  auto s = sim::ParseSimSpec("sim:size=1M,workload=sequential,disk=64K");
  ASSERT_TRUE(s.ok());
  disk::testing::TempDir dir;
  disk::EpochCounter clock;
  disk::EpochDiskLogOptions lo;
  lo.budget_bytes = 2 * 4096;
  disk::EpochDiskLog log(0, nullptr, lo);
  auto g = sim::SimGuest::Create(*s);
  ASSERT_TRUE(g.ok());
  ASSERT_TRUE(sim::SimGuest::CreateDiskFile(dir.path() + "/d", s->disk_bytes).ok());
  ASSERT_TRUE((*g)->OpenDisk(dir.path() + "/d", &clock, &log).ok());
  protocol::DiskInfo info{0, s->disk_bytes, "xvda"};
  disk::LocalDiskTap tap(info, (*g)->disk_store(), &clock, &log);
  DiskReplicator disks({&tap});
  // The first epoch's full copy (an empty disk: zeros only) fits.
  ASSERT_TRUE(disks.Paused(1, true).ok());
  auto pair = test_engine::MakeStreamPair();
  DiskBackup backup(std::move(pair.backup));
  GuestInfo gi;
  gi.guest_pages = (*g)->guest_pages();
  gi.identity = s->ToString();
  gi.disks = disks.infos();
  auto hs = std::async(std::launch::async, [&] { return backup.Handshake(true); });
  auto sender = CheckpointSender::Start(std::move(pair.primary), Options(), gi);
  ASSERT_TRUE(hs.get().ok());
  ASSERT_TRUE(sender.ok());
  ASSERT_TRUE((*sender)->BeginEpoch(1).ok());
  ASSERT_TRUE(disks.SendEpoch(1, **sender, std::chrono::steady_clock::now() + kBound, nullptr).ok());
  ASSERT_TRUE((*sender)->EndEpoch().ok());
  ASSERT_TRUE(backup.ReadEpoch().ok());
  // Epoch 2: three data records do not fit two blocks of budget.
  ASSERT_TRUE((*sender)->BeginEpoch(2).ok());
  ASSERT_TRUE((*g)->RunSteps(4 * 3).ok());
  ASSERT_TRUE(disks.Paused(2, false).ok());
  Status st = disks.SendEpoch(2, **sender, std::chrono::steady_clock::now() + kBound, nullptr);
  EXPECT_EQ(st.code(), Code::kOutOfRange);
  EXPECT_NE(st.message().find("resync"), std::string::npos) << st.message();
}

// A tap whose Pause takes at least `delay` (a disk-export slow to answer
// PAUSE), delegating everything to a real tap.
class SlowPauseTap final : public disk::DiskTap {
 public:
  SlowPauseTap(disk::DiskTap* real, std::chrono::milliseconds delay) : real_(real), delay_(delay) {}
  const protocol::DiskInfo& info() const override { return real_->info(); }
  bool can_stream() const override { return real_->can_stream(); }
  uint64_t lineage() const override { return real_->lineage(); }
  void Refresh() override { real_->Refresh(); }
  void Acked(uint64_t tag) override { real_->Acked(tag); }
  uint64_t change_floor() const override { return real_->change_floor(); }
  uint64_t copied_regions() const override { return real_->copied_regions(); }
  bool can_compare() const override { return real_->can_compare(); }
  uint64_t walked_bytes() const override { return real_->walked_bytes(); }
  uint64_t skipped_bytes() const override { return real_->skipped_bytes(); }
  Result<uint64_t> Pause(disk::CopyMode copy, uint64_t since, uint64_t lineage,
                         std::shared_ptr<const protocol::DiskChunkTable> backup) override {
    std::this_thread::sleep_for(delay_);
    return real_->Pause(copy, since, lineage, std::move(backup));
  }
  Status Seal(uint64_t tag, std::chrono::steady_clock::time_point deadline) override {
    return real_->Seal(tag, deadline);
  }
  void ForEachSealed(const std::function<void(const protocol::DiskRecord&)>& fn) const override {
    real_->ForEachSealed(fn);
  }
  uint32_t sealed_sync_state() const override { return real_->sealed_sync_state(); }

 private:
  disk::DiskTap* real_;
  std::chrono::milliseconds delay_;
};

// The whole primary: PrimaryController + TimerDriver on a running simulated
// guest with a disk. Every epoch the backup receives carries the disk part,
// and the disk copy it builds holds exactly the records the epoch's state
// says were written, although the guest keeps writing while epochs stream.
// The tap answers PAUSE 2 ms late: each epoch's stats count that time as its
// disk cut, inside its pause.
TEST(DiskReplicator, TheControllerReplicatesTheDiskWithEveryEpoch) {
  Primary p("sim:size=4M,workload=sequential,seed=11,rate=2000,disk=64K");
  constexpr auto kPauseDelay = 2ms;
  SlowPauseTap slow(p.tap.get(), kPauseDelay);
  DiskReplicator disks({&slow});
  auto pair = test_engine::MakeStreamPair();
  DiskBackup backup(std::move(pair.backup));
  uint64_t checked = 0, last_records = 0;
  Status backup_status;
  std::thread bt([&] {
    backup_status = backup.Handshake(true);
    while (backup_status.ok()) {
      Status e = backup.ReadEpoch();
      if (e.code() == Code::kClosed) break;  // BYE: a clean stop
      if (!e.ok()) {
        backup_status = e.With("epoch " + std::to_string(backup.epoch() + 1));
        break;
      }
      auto n = sim::SimDiskRecordsInState(backup.state());
      if (!n.ok()) {
        backup_status = n.status();
        break;
      }
      const std::vector<uint8_t>& img = backup.image(p.info.id);
      Status c = sim::CheckSimDisk(p.spec, *n, [&](uint64_t off, std::span<uint8_t> out) {
        std::memcpy(out.data(), img.data() + off, out.size());
        return Status::Ok();
      });
      if (!c.ok()) {
        backup_status = c.With("epoch " + std::to_string(backup.epoch()));
        break;
      }
      ++checked;
      last_records = *n;
      backup_status = backup.Ack();
    }
    backup.Close();
  });

  NoOutputCommit output;
  SenderOptions sopt = Options();
  ControllerOptions lopt;
  lopt.interval = 5ms;
  lopt.max_epochs = 25;
  lopt.ack_timeout = kBound;
  lopt.disks = &disks;
  std::vector<EpochStats> seen;
  lopt.on_epoch = [&](const EpochStats& st) { seen.push_back(st); };
  std::unique_ptr<transport::Stream> primary_end = std::move(pair.primary);
  auto connect = [&]() -> Result<std::unique_ptr<transport::Stream>> {
    if (!primary_end) return Status::Closed("test: only one connection");
    return std::move(primary_end);
  };
  ASSERT_TRUE(p.guest->Start().ok());
  TimerDriverOptions topts;
  topts.disks = disks.infos();
  PrimaryController loop(MakeTimerDriver(*p.guest, topts), output, connect, sopt, lopt, nullptr);
  std::atomic<bool> stop{false};
  Status st = loop.Run(stop);
  p.guest->Stop();
  bt.join();
  ASSERT_TRUE(st.ok()) << st.ToString();
  ASSERT_TRUE(backup_status.ok()) << backup_status.ToString();
  EXPECT_EQ(checked, 25u);
  EXPECT_GT(last_records, 0u);
  ASSERT_EQ(seen.size(), 25u);
  uint64_t records = 0;
  for (const EpochStats& e : seen) {
    EXPECT_TRUE(e.has_disks);
    EXPECT_GT(e.disk_wire_bytes, 0u);  // a DISK_END at least, every epoch
    EXPECT_GE(e.disk_cut, kPauseDelay) << "epoch " << e.epoch;
    EXPECT_LE(e.disk_cut, e.pause) << "epoch " << e.epoch << ": the cut is inside the pause";
    records += e.disk_records;
  }
  EXPECT_GT(records, 0u);
  const std::string json = EpochStatsJson(seen.back());
  EXPECT_NE(json.find("\"disk_wire_bytes\""), std::string::npos);
  EXPECT_NE(json.find("\"disk_cut_us\":" + std::to_string(seen.back().disk_cut.count())), std::string::npos) << json;
}

// A tap that records how it was paused; its lineage can change under the
// engine (a disk-export restarted and reconnected to).
class ScriptedTap final : public disk::DiskTap {
 public:
  explicit ScriptedTap(uint64_t lineage) : lineage_(lineage) {}
  const protocol::DiskInfo& info() const override { return info_; }
  uint64_t lineage() const override { return lineage_; }
  uint64_t copied_regions() const override { return 7; }
  Result<uint64_t> Pause(disk::CopyMode copy, uint64_t since, uint64_t lineage,
                         std::shared_ptr<const protocol::DiskChunkTable> backup) override {
    (void)backup;
    calls.push_back({copy, since, lineage});
    if (restart_at_pause) lineage_ = 0xBEEF;
    if (copy == disk::CopyMode::kChanged && refuse_changed) return Status::Unsupported("changes since 3 forgotten");
    return ++tag_;
  }
  Status Seal(uint64_t, std::chrono::steady_clock::time_point) override { return Status::Ok(); }
  void ForEachSealed(const std::function<void(const protocol::DiskRecord&)>&) const override {}

  struct Call {
    disk::CopyMode copy;
    uint64_t since, lineage;
  };
  std::vector<Call> calls;
  bool restart_at_pause = false;
  bool refuse_changed = false;

 private:
  protocol::DiskInfo info_{4, 1 << 20, "xvdb"};
  uint64_t lineage_;
  uint64_t tag_ = 10;
};

TEST(DiskReplicatorDelta, ABackupHoldingTheTapsLineageGetsTheChangesElseTheWholeDisk) {
  ScriptedTap tap(0xAA);
  DiskReplicator r({&tap});
  EXPECT_EQ(r.lineages(), std::vector<uint64_t>{0xAA});
  // The backup holds disk 4 as of tag 3 of lineage 0xAA: changes since 3.
  DiskSessionCopy copy{/*stream=*/true, {{4, 0xAA, 3}}, {0xAA}};
  ASSERT_TRUE(r.Paused(1, true, copy).ok());
  ASSERT_EQ(tap.calls.size(), 1u);
  EXPECT_EQ(tap.calls[0].copy, disk::CopyMode::kChanged) << "preferred even where a stream was agreed";
  EXPECT_EQ(tap.calls[0].since, 3u);
  EXPECT_EQ(tap.calls[0].lineage, 0xAAu);
  EXPECT_EQ(r.resync_regions(), 7u);
  EXPECT_EQ(r.disks_copied_whole(), 0u);
  // Another lineage's copy, or another disk's: the whole disk.
  tap.calls.clear();
  copy.held = {{4, 0xBB, 3}, {5, 0xAA, 3}};
  ASSERT_TRUE(r.Paused(2, true, copy).ok());
  ASSERT_EQ(tap.calls.size(), 1u);
  EXPECT_EQ(tap.calls[0].copy, disk::CopyMode::kStream);
  EXPECT_EQ(r.disks_copied_whole(), 1u);
  // The tap cannot tell what changed: the whole disk, in the same pause.
  tap.calls.clear();
  tap.refuse_changed = true;
  copy = DiskSessionCopy{false, {{4, 0xAA, 3}}, {0xAA}};
  ASSERT_TRUE(r.Paused(3, true, copy).ok());
  ASSERT_EQ(tap.calls.size(), 2u);
  EXPECT_EQ(tap.calls[0].copy, disk::CopyMode::kChanged);
  EXPECT_EQ(tap.calls[1].copy, disk::CopyMode::kInPause);
  EXPECT_EQ(r.resync_regions(), 0u);
}

// kCapDiskFloor (docs/DISK.md §7.4): the HELLO names how far back each
// disk's changes reach (the tap forgets through the tag it was told the
// backup holds), so a backup holding an older copy describes it; a HELLO
// with no room for the floors goes without them rather than oversized.
TEST(DiskReplicatorDelta, TheHelloNamesHowFarEachDisksChangesReach) {
  Primary p("sim:size=1M,workload=sequential,seed=3,disk=1M");
  ASSERT_TRUE(p.guest->RunSteps(4 * 8).ok());
  EXPECT_EQ(p.disks->change_floors(), std::vector<uint64_t>{0}) << "nothing forgotten yet";
  p.tap->Acked(5);
  EXPECT_EQ(p.disks->change_floors(), std::vector<uint64_t>{5});
  p.tap->Acked(3);
  EXPECT_EQ(p.disks->change_floors(), std::vector<uint64_t>{5}) << "an older ack moved the floor back";
  auto handshake = [](GuestInfo gi) -> std::pair<Status, protocol::Hello> {
    auto pair = test_engine::MakeStreamPair();
    DiskBackup backup(std::move(pair.backup));
    auto hs = std::async(std::launch::async, [&] { return backup.Handshake(true); });
    auto sender = CheckpointSender::Start(std::move(pair.primary), Options(), gi);
    Status st = hs.get();
    if (st.ok() && !sender.ok()) st = sender.status();
    return {st, backup.hello()};
  };
  GuestInfo gi;
  gi.guest_pages = p.guest->guest_pages();
  gi.identity = p.spec.ToString();
  gi.disks = p.disks->infos();
  gi.disk_lineages = p.disks->lineages();
  gi.disk_change_floors = p.disks->change_floors();
  gi.offer_disk_digests = p.disks->can_compare();
  ASSERT_TRUE(gi.offer_disk_digests);
  auto [st, hello] = handshake(gi);
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_NE(hello.capabilities & protocol::kCapDiskFloor, 0u);
  EXPECT_EQ(hello.disk_change_floors, std::vector<uint64_t>{5});
  EXPECT_EQ(hello.disk_lineages, p.disks->lineages());

  // Eight disks with the longest names and the longest identity: the floors
  // do not fit the HELLO's 1024 bytes, so they are left out; the rest of
  // the offer (lineages) stands.
  GuestInfo big = gi;
  big.identity.assign(protocol::kMaxIdentity, 'i');
  big.disks.clear();
  big.disk_lineages.clear();
  big.disk_change_floors.clear();
  for (uint32_t i = 0; i < protocol::kMaxDisks; ++i) {
    big.disks.push_back({i + 1, 4096, std::string(protocol::kMaxDiskName - 1, 'd') + char('a' + i)});
    big.disk_lineages.push_back(0x100 + i);
    big.disk_change_floors.push_back(i);
  }
  auto [big_st, big_hello] = handshake(big);
  ASSERT_TRUE(big_st.ok()) << big_st.ToString();
  EXPECT_EQ(big_hello.capabilities & protocol::kCapDiskFloor, 0u);
  EXPECT_TRUE(big_hello.disk_change_floors.empty());
  EXPECT_EQ(big_hello.disk_lineages, big.disk_lineages);
  // Without DISK_DIGESTS the floors would say nothing: not offered.
  gi.offer_disk_digests = false;
  auto [plain_st, plain_hello] = handshake(gi);
  ASSERT_TRUE(plain_st.ok()) << plain_st.ToString();
  EXPECT_EQ(plain_hello.capabilities & protocol::kCapDiskFloor, 0u);
}

// The floor is exactly where the tap's changes stop being known: a copy of
// what changed since the floor is answered, one since the tag before it is
// not (the backup's ">= floor" rule relies on this, DISK.md §7.4).
TEST(DiskReplicatorDelta, TheChangeFloorIsTheOldestTagWhoseChangesAreKnown) {
  Primary p("sim:size=1M,workload=sequential,seed=4,disk=1M");
  const uint64_t lineage = p.tap->lineage();
  std::vector<uint64_t> tags;
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(p.guest->RunSteps(4 * 3).ok());
    auto t = p.tap->Pause(disk::CopyMode::kNone);
    ASSERT_TRUE(t.ok()) << t.status().ToString();
    ASSERT_TRUE(p.tap->Seal(*t, std::chrono::steady_clock::now() + kBound).ok());
    tags.push_back(*t);
  }
  p.tap->Acked(tags[2]);
  ASSERT_EQ(p.tap->change_floor(), tags[2]);
  auto before = p.tap->Pause(disk::CopyMode::kChanged, tags[2] - 1, lineage);
  EXPECT_EQ(before.status().code(), Code::kUnsupported) << "changes since a tag before the floor were forgotten";
  auto at = p.tap->Pause(disk::CopyMode::kChanged, tags[2], lineage);
  ASSERT_TRUE(at.ok()) << at.status().ToString();
  EXPECT_GE(p.tap->copied_regions(), 1u) << "the guest wrote after the floor's tag";
}

TEST(DiskReplicatorDelta, AFrontEndRestartedSinceTheHelloEndsTheSession) {
  ScriptedTap tap(0xAA);
  DiskReplicator r({&tap});
  tap.restart_at_pause = true;  // the pause reconnects to a new export instance
  DiskSessionCopy copy{false, {}, {0xAA}};
  Status st = r.Paused(1, true, copy);
  EXPECT_EQ(st.code(), Code::kClosed) << st.ToString();
  EXPECT_NE(st.message().find("restarted since the session began"), std::string::npos) << st.ToString();
  // Without lineages in the HELLO there is nothing to mix up.
  ScriptedTap plain(0xAA);
  DiskReplicator r2({&plain});
  plain.restart_at_pause = true;
  EXPECT_TRUE(r2.Paused(1, true, DiskSessionCopy{}).ok());
}

}  // namespace
}  // namespace romulus::replicator
