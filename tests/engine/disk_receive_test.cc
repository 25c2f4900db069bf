// The backup's half of disk replication (docs/DISK.md §6, PROTOCOL.md
// §3.10): hand-built DISK/DISK_END frames through a real CheckpointReceiver
// over a socketpair into a file-backed ImageSink. A good epoch is staged,
// committed with its memory and acked once; every broken epoch ends in ERROR
// with nothing of it applied: the previous checkpoint's image, disk and state
// files are byte-identical afterwards.
#include <gtest/gtest.h>
#include <xxhash.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <mutex>
#include <thread>

#include "buffer/reusable_buffer.h"
#include "common/digest.h"
#include "common/little_endian.h"
#include "compress/page_batch.h"
#include "protocol/disk_digests.h"
#include "protocol/disk_records.h"
#include "protocol/frame_io.h"
#include "protocol/messages.h"
#include "restore/checkpoint_receiver.h"
#include "sim/image_files.h"
#include "sim/image_sink.h"
#include "tests/engine/memory_only_sink.h"
#include "tests/engine/stream_pair.h"

namespace romulus {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;
using protocol::ErrorCode;
using protocol::FrameType;

constexpr uint32_t kDiskId = 7;
constexpr uint64_t kDiskSize = 1 << 20;

uint64_t FileHash(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return 0;
  std::vector<char> b((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return XXH3_64bits(b.data(), b.size()) ^ (b.size() << 1) ^ 1;
}

std::map<std::string, uint64_t> DirHashes(const std::string& dir) {
  std::map<std::string, uint64_t> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().extension() != ".journal") out[e.path().filename()] = FileHash(e.path());
  }
  return out;
}

std::vector<uint8_t> Block(uint8_t fill, size_t n = 4096) { return std::vector<uint8_t>(n, fill); }

// Forwards everything to an image sink except, when their error is set,
// DescribeDisk (a backup whose disk cannot be described) and OnState (a
// backup that cannot hold what the state record describes).
class FaultySink final : public restore::GuestSink {
 public:
  FaultySink(restore::GuestSink& s, Status describe_error, Status state_error)
      : s_(s), err_(std::move(describe_error)), state_err_(std::move(state_error)) {}
  Status BeginSession(uint64_t p, const std::string& id) override { return s_.BeginSession(p, id); }
  bool supports_disks() const override { return s_.supports_disks(); }
  Status BeginSessionWithDisks(uint64_t p, const std::string& id, std::span<const protocol::DiskInfo> d) override {
    return s_.BeginSessionWithDisks(p, id, d);
  }
  Status OnDisk(uint64_t e, uint32_t id, const protocol::DiskRecord& r) override { return s_.OnDisk(e, id, r); }
  bool supports_disk_sync() const override { return s_.supports_disk_sync(); }
  Status CommitIncomplete(uint64_t e) override { return s_.CommitIncomplete(e); }
  bool supports_disk_delta() const override { return s_.supports_disk_delta(); }
  std::vector<protocol::DiskHeld> held_disks() const override { return s_.held_disks(); }
  Status SetSessionDiskLineages(std::span<const uint64_t> l) override { return s_.SetSessionDiskLineages(l); }
  void StageDiskLineage(uint32_t id, uint64_t l, uint64_t t) override { s_.StageDiskLineage(id, l, t); }
  bool supports_disk_digests() const override { return true; }
  Status DescribeDisk(uint32_t i, uint64_t l, std::span<protocol::ChunkHash> h) override {
    return err_.ok() ? s_.DescribeDisk(i, l, h) : err_;
  }
  Status OnPage(uint64_t e, uint64_t pfn, const uint8_t* page) override { return s_.OnPage(e, pfn, page); }
  Status OnState(uint64_t e, std::span<const uint8_t> r) override {
    return state_err_.ok() ? s_.OnState(e, r) : state_err_;
  }
  Status Commit(uint64_t e) override { return s_.Commit(e); }
  void Discard() override { s_.Discard(); }
  Status Activate(const std::string& r) override { return s_.Activate(r); }
  bool has_committed() const override { return s_.has_committed(); }
  const MemoryDigest* held_pages() const override { return s_.held_pages(); }
  uint64_t last_committed_epoch() const override { return s_.last_committed_epoch(); }

 private:
  restore::GuestSink& s_;
  Status err_;
  Status state_err_;
};

class DiskReceive : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = (fs::temp_directory_path() / "disk_recv.XXXXXX").string();
    ASSERT_NE(mkdtemp(dir_.data()), nullptr);
    path_ = dir_ + "/g.img";
  }
  void TearDown() override {
    if (backup_.joinable()) {
      pair_.primary->Shutdown();
      backup_.join();
    }
    sink_.reset();
    fs::remove_all(dir_);
  }
  void StartBackup(restore::ReceiverOptions ro = {}) {
    sim::ImageSinkOptions so;
    so.path = path_;
    so.run_activated = false;
    so.max_disk_staging_bytes = staging_;
    so.max_disk_spill_bytes = spill_;
    auto s = sim::ImageSink::Open(so);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    sink_ = std::move(*s);
    dd_.Reset();  // a test may start over with a new backup
    pair_ = test_engine::MakeStreamPair();
    ro.failover_timeout = 5000ms;
    receiver_ = std::make_unique<restore::CheckpointReceiver>(ro);
    if (!describe_error_.ok() || !state_error_.ok()) {
      serve_sink_ = std::make_unique<FaultySink>(*sink_, describe_error_, state_error_);
    }
    backup_ = std::thread([this] {
      restore::GuestSink& served = serve_sink_ ? static_cast<restore::GuestSink&>(*serve_sink_) : *sink_;
      end_ = receiver_->Serve(*pair_.backup, served, [this](const restore::CommitEvent& e) {
        std::lock_guard<std::mutex> lk(commits_mu_);
        commits_.push_back({e.epoch, e.incomplete});
      });
    });
    writer_ = std::make_unique<protocol::FrameWriter>(pair_.primary.get());
    reader_ = std::make_unique<protocol::FrameReader>(pair_.primary.get(), &rb_);
  }
  protocol::HelloAck Hello(uint64_t caps, uint64_t required, bool expect_accept = true, uint64_t first_epoch = 1) {
    protocol::Hello h;
    h.first_epoch = first_epoch;
    h.capabilities = caps;
    h.required = required;
    h.cache_pages = 16;
    h.guest_pages = 16;
    h.session_id = 3;
    h.identity = "sim:size=64K,disk=1M";
    if ((caps & protocol::kCapDisk) != 0) h.disks = {{kDiskId, kDiskSize, "xvda"}};
    EXPECT_TRUE(writer_->Send(h, 0).ok());
    auto f = Next();
    EXPECT_TRUE(f.ok() && f->type() == FrameType::kHelloAck);
    if (!f.ok()) return {};
    auto ack = protocol::HelloAck::Decode(f->payload);
    EXPECT_TRUE(ack.ok());
    EXPECT_EQ(ack->accepted, expect_accept) << ack->text;
    return *ack;
  }
  Result<protocol::Frame> Next() {
    while (true) {
      auto f = reader_->Next(transport::DeadlineIn(5000ms));
      if (!f.ok() || f->type() != FrameType::kHeartbeat) return f;
    }
  }
  // One page (pfn 1, filled with `fill`) in a PAGES frame; the memory digest
  // of the epoch's image follows the page.
  void Page(uint64_t epoch, uint8_t fill) {
    std::vector<uint8_t> page = Block(fill);
    uint8_t batch[8192];
    compress::BatchWriter w(batch, sizeof batch);
    ASSERT_TRUE(w.Append({1, compress::PageKind::kRaw, {page.data(), page.size()}}).ok());
    ASSERT_TRUE(writer_->Write(FrameType::kPages, epoch, {batch, w.size()}).ok());
    pages_ = 1;
    payload_ = w.size();
    digest_ = PageHash(1, page.data());
  }
  // A DISK frame from a builder; its records also feed the test's digest.
  void Disk(uint64_t epoch, protocol::DiskFrameBuilder& b) {
    auto p = b.payload();
    ASSERT_TRUE(writer_->Write(FrameType::kDisk, epoch, p).ok());
    protocol::DiskFrameParser parser;
    std::vector<protocol::DiskInfo> disks = {{kDiskId, kDiskSize, "xvda"}};
    if (parser.Open(p, disks).ok()) {
      protocol::DiskRecord r;
      while (parser.Next(&r)) dd_.Add(r);
    }
  }
  void DiskEnd(uint64_t epoch, uint32_t id = kDiskId, uint64_t digest_xor = 0, uint32_t sync_state = 0,
               uint64_t tag = 0) {
    protocol::DiskEnd e;
    e.disk_id = id;
    e.has_tag = tag != 0;
    e.tag = tag;
    e.sync_state = sync_state;
    e.record_count = dd_.records();
    e.data_bytes = dd_.data_bytes();
    e.digest = dd_.value() ^ digest_xor;
    ASSERT_TRUE(writer_->Send(e, epoch).ok());
  }
  void EpochEnd(uint64_t epoch) {
    protocol::EpochEnd e;
    e.page_count = pages_;
    e.frame_count = pages_ ? 1 : 0;
    e.payload_bytes = payload_;
    e.digest = digest_;
    ASSERT_TRUE(writer_->Send(e, epoch).ok());
    dd_.Reset();
  }
  void ExpectAck(uint64_t epoch) {
    auto f = Next();
    ASSERT_TRUE(f.ok()) << f.status().ToString();
    ASSERT_EQ(f->type(), FrameType::kAck);
    auto a = protocol::Ack::Decode(f->payload);
    ASSERT_TRUE(a.ok());
    EXPECT_EQ(a->epoch, epoch);
  }
  void ExpectError(ErrorCode code) {
    auto f = Next();
    ASSERT_TRUE(f.ok()) << f.status().ToString();
    ASSERT_EQ(f->type(), FrameType::kError);
    auto err = protocol::Error::Decode(f->payload);
    ASSERT_TRUE(err.ok());
    EXPECT_EQ(err->code, static_cast<uint16_t>(code)) << err->text;
    error_text_ = err->text;
    backup_.join();
  }
  // Epoch 1 (the direct first epoch): blocks 0..3 = 0x11, block 8 = 0x22; acked.
  void CommitEpoch1() {
    Hello(protocol::kCapDisk, protocol::kCapDisk);
    Page(1, 0x51);
    protocol::DiskFrameBuilder b;
    b.Reset(kDiskId);
    auto d = Block(0x11, 4 * 4096);
    ASSERT_TRUE(b.AddWrite(0, d, false, false));
    auto e = Block(0x22);
    ASSERT_TRUE(b.AddWrite(8 * 4096, e, true, true));
    ASSERT_TRUE(b.AddFlush());
    Disk(1, b);
    DiskEnd(1);
    EpochEnd(1);
    ExpectAck(1);
    // The sink commits before it acks, so the files are settled now.
    committed_files_ = DirHashes(dir_);
  }
  // After a refused epoch 2: still epoch 1, files untouched.
  void ExpectEpoch1Kept() {
    EXPECT_EQ(sink_->last_committed_epoch(), 1u);
    EXPECT_EQ(sink_->digest(), PageHash(1, Block(0x51).data()));
    EXPECT_EQ(DirHashes(dir_), committed_files_) << "a refused epoch changed the checkpoint's files";
    sink_.reset();  // and a restarted backup finds epoch 1 too
    sim::ImageSinkOptions so;
    so.path = path_;
    auto s = sim::ImageSink::Open(so);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    EXPECT_EQ((*s)->last_committed_epoch(), 1u) << (*s)->recovery_note();
    ASSERT_EQ((*s)->committed_disks().size(), 1u);
  }

  std::string dir_, path_;
  size_t staging_ = size_t{64} << 20;
  uint64_t spill_ = 0;
  Status describe_error_;                        // not ok: the served sink's DescribeDisk fails so
  Status state_error_;                           // not ok: the served sink's OnState fails so
  std::unique_ptr<restore::GuestSink> serve_sink_;
  std::unique_ptr<sim::ImageSink> sink_;
  test_engine::StreamPair pair_;
  std::unique_ptr<restore::CheckpointReceiver> receiver_;
  restore::SessionEnd end_;
  std::thread backup_;
  buffer::ReusableBuffer rb_{4096, 1 << 20};
  std::unique_ptr<protocol::FrameWriter> writer_;
  std::unique_ptr<protocol::FrameReader> reader_;
  protocol::DiskRecordDigest dd_;
  uint64_t pages_ = 0, payload_ = 0, digest_ = 0;
  std::map<std::string, uint64_t> committed_files_;
  std::string error_text_;
  std::mutex commits_mu_;
  std::vector<std::pair<uint64_t, std::string>> commits_;  // (epoch, incomplete) as the service sees them
};

std::vector<uint8_t> ReadDisk(const std::string& path, uint64_t off, size_t n) {
  std::ifstream in(path, std::ios::binary);
  in.seekg(static_cast<std::streamoff>(off));
  std::vector<uint8_t> b(n);
  in.read(reinterpret_cast<char*>(b.data()), static_cast<std::streamsize>(n));
  return b;
}

TEST_F(DiskReceive, EpochsAreCommittedWithMemoryAndAckedOnce) {
  StartBackup();
  CommitEpoch1();
  EXPECT_EQ(ReadDisk(path_ + ".disk7", 0, 4 * 4096), Block(0x11, 4 * 4096));
  EXPECT_EQ(ReadDisk(path_ + ".disk7", 8 * 4096, 4096), Block(0x22));
  // Epoch 2, journaled: a partial overwrite, a zero range, a write in two
  // frames, interleaved with the page.
  protocol::DiskFrameBuilder b;
  b.Reset(kDiskId);
  auto w = Block(0x33, 1024);
  ASSERT_TRUE(b.AddWrite(4096 + 512, w, false, false));
  ASSERT_TRUE(b.AddZero(2 * 4096, 2 * 4096, true, false));
  Disk(2, b);
  Page(2, 0x52);
  b.Reset(kDiskId);
  auto x = Block(0x44);
  ASSERT_TRUE(b.AddWrite(kDiskSize - 4096, x, false, true));
  Disk(2, b);
  DiskEnd(2);
  EpochEnd(2);
  ExpectAck(2);
  ASSERT_TRUE(writer_->Send(protocol::Bye{}, 2).ok());
  auto bye = Next();
  ASSERT_TRUE(bye.ok() && bye->type() == FrameType::kBye);
  backup_.join();
  EXPECT_EQ(end_.epochs_committed, 2u);

  std::vector<uint8_t> want = Block(0x11, 2 * 4096);
  std::memset(want.data() + 4096 + 512, 0x33, 1024);
  EXPECT_EQ(ReadDisk(path_ + ".disk7", 0, 2 * 4096), want);
  EXPECT_EQ(ReadDisk(path_ + ".disk7", 2 * 4096, 2 * 4096), Block(0, 2 * 4096));
  EXPECT_EQ(ReadDisk(path_ + ".disk7", 8 * 4096, 4096), Block(0x22));
  EXPECT_EQ(ReadDisk(path_ + ".disk7", kDiskSize - 4096, 4096), Block(0x44));
  // PATH.state records the disk and a digest that is the file's.
  ASSERT_EQ(sink_->committed_disks().size(), 1u);
  const sim::DiskState& d = sink_->committed_disks()[0];
  EXPECT_EQ(d.id, kDiskId);
  EXPECT_EQ(d.size, kDiskSize);
  EXPECT_EQ(d.name, "xvda");
  ASSERT_TRUE(d.has_digest);
  auto fd_digest = sim::DiskFileDigest(sink_->disk_fd(kDiskId), kDiskSize);
  ASSERT_TRUE(fd_digest.ok());
  EXPECT_EQ(d.digest, *fd_digest);
  EXPECT_NE(d.digest, 0u);
}

TEST_F(DiskReceive, AMissingDiskEndIsAProtocolErrorAndNothingIsApplied) {
  StartBackup();
  CommitEpoch1();
  protocol::DiskFrameBuilder b;
  b.Reset(kDiskId);
  auto w = Block(0x99);
  ASSERT_TRUE(b.AddWrite(0, w, false, false));
  Disk(2, b);
  Page(2, 0x52);
  EpochEnd(2);
  ExpectError(ErrorCode::kProtocol);
  EXPECT_NE(error_text_.find("without DISK_END"), std::string::npos) << error_text_;
  ExpectEpoch1Kept();
}

TEST_F(DiskReceive, AWrongDiskDigestIsADigestMismatch) {
  StartBackup();
  CommitEpoch1();
  protocol::DiskFrameBuilder b;
  b.Reset(kDiskId);
  auto w = Block(0x99);
  ASSERT_TRUE(b.AddWrite(0, w, false, false));
  Disk(2, b);
  DiskEnd(2, kDiskId, /*digest_xor=*/1);
  ExpectError(ErrorCode::kDigestMismatch);
  ExpectEpoch1Kept();
}

TEST_F(DiskReceive, UnknownDiskBeyondTheEndOversizeAndCorruptFramesAreRefused) {
  // Raw DISK payloads the builder would not make: each must be refused
  // whole with ERROR protocol, nothing of epoch 2 applied.
  auto record = [](uint8_t kind, uint8_t flags, uint32_t length, uint64_t offset, uint32_t data_len) {
    std::vector<uint8_t> p(8 + protocol::kDiskRecordHeadSize + data_len, 0x5a);
    StoreLE32(p.data(), kDiskId);
    StoreLE32(p.data() + 4, 1);
    uint8_t* r = p.data() + 8;
    r[0] = kind;
    r[1] = flags;
    r[2] = r[3] = 0;
    StoreLE32(r + 4, length);
    StoreLE64(r + 8, offset);
    StoreLE32(r + 16, data_len);
    return p;
  };
  std::vector<std::pair<std::string, std::vector<uint8_t>>> cases;
  auto unknown = record(1, 0, 4096, 0, 4096);
  StoreLE32(unknown.data(), 99);
  cases.push_back({"unknown disk", unknown});
  cases.push_back({"beyond the end", record(1, 0, 4096, kDiskSize, 4096)});
  cases.push_back({"straddling the end", record(3, 0, 8192, kDiskSize - 4096, 0)});
  cases.push_back({"oversize write", record(1, 0, protocol::kMaxDiskWriteChunk + 512, 0,
                                            protocol::kMaxDiskWriteChunk + 512)});
  auto reserved = record(1, 0, 4096, 0, 4096);
  reserved[8 + 2] = 1;
  cases.push_back({"reserved bits", reserved});
  cases.push_back({"unknown kind", record(9, 0, 4096, 0, 0)});
  auto truncated = record(1, 0, 4096, 0, 4096);
  truncated.pop_back();
  cases.push_back({"truncated data", truncated});
  for (const auto& [name, payload] : cases) {
    SCOPED_TRACE(name);
    TearDown();
    SetUp();
    StartBackup();
    CommitEpoch1();
    Page(2, 0x52);
    ASSERT_TRUE(writer_->Write(FrameType::kDisk, 2, payload).ok());
    ExpectError(ErrorCode::kProtocol);
    ExpectEpoch1Kept();
  }
}

TEST_F(DiskReceive, DiskFramesAfterTheirDiskEndOrTwoDiskEndsAreRefused) {
  for (bool second_end : {false, true}) {
    SCOPED_TRACE(second_end ? "second DISK_END" : "DISK after DISK_END");
    TearDown();
    SetUp();
    StartBackup();
    CommitEpoch1();
    DiskEnd(2);
    if (second_end) {
      DiskEnd(2);
    } else {
      protocol::DiskFrameBuilder b;
      b.Reset(kDiskId);
      auto w = Block(0x99);
      ASSERT_TRUE(b.AddWrite(0, w, false, false));
      Disk(2, b);
    }
    ExpectError(ErrorCode::kProtocol);
    ExpectEpoch1Kept();
  }
}

TEST_F(DiskReceive, AnEpochBeyondTheStagingBoundIsAResourceError) {
  staging_ = 64 * 1024;  // the first epoch is written directly: not bounded
  StartBackup();
  CommitEpoch1();
  protocol::DiskFrameBuilder b;
  b.Reset(kDiskId);
  auto w = Block(0x77, 128 * 1024);
  ASSERT_TRUE(b.AddWrite(0, w, false, false));
  Disk(2, b);
  ExpectError(ErrorCode::kResource);
  EXPECT_NE(error_text_.find("--max-disk-staging"), std::string::npos) << error_text_;
  EXPECT_EQ(end_.cause, restore::EndCause::kCorruptStream) << "the backup is fine: no failover on this";
  ExpectEpoch1Kept();
}

// The same epoch with spilling allowed: staged past memory into the spill
// file, committed with its memory, acked once, and applied exactly.
TEST_F(DiskReceive, AnEpochBeyondMemoryIsSpilledCommittedAndAckedOnce) {
  staging_ = 64 * 1024;
  spill_ = uint64_t{1} << 20;
  StartBackup();
  CommitEpoch1();
  Page(2, 0x52);
  protocol::DiskFrameBuilder b;
  b.Reset(kDiskId);
  // A block in memory, then a write over it that spills: applied in that order.
  auto early = Block(0x66, 4096);
  ASSERT_TRUE(b.AddWrite(2 * 4096, early, false, false));
  auto w = Block(0x77, 128 * 1024);
  ASSERT_TRUE(b.AddWrite(0, w, false, false));
  auto z = Block(0, 4096);
  ASSERT_TRUE(b.AddZero(8 * 4096, 4096, false, false));
  Disk(2, b);
  DiskEnd(2);
  EpochEnd(2);
  ExpectAck(2);
  EXPECT_EQ(sink_->last_committed_epoch(), 2u);
  EXPECT_EQ(sink_->spilled_disk_bytes(), 0u) << "the spill outlived its commit";
  auto want = w;  // the zero range came after the write: stream order
  std::fill(want.begin() + 8 * 4096, want.begin() + 9 * 4096, 0);
  EXPECT_EQ(ReadDisk(path_ + ".disk7", 0, 128 * 1024), want);
  EXPECT_EQ(ReadDisk(path_ + ".disk7", 8 * 4096, 4096), z) << "the zero range after the spilled write";
  // Beyond memory and spill: refused, epoch 2 kept.
  committed_files_ = DirHashes(dir_);
  Page(3, 0x53);
  for (int i = 0; i < 8; ++i) {  // 8 x 128 KiB: the spill's 1 MiB cannot hold the last
    protocol::DiskFrameBuilder big;
    big.Reset(kDiskId);
    ASSERT_TRUE(big.AddWrite(uint64_t(i) * 128 * 1024, w, false, false));
    Disk(3, big);
  }
  ExpectError(ErrorCode::kResource);
  EXPECT_NE(error_text_.find("--max-disk-spill"), std::string::npos) << error_text_;
  EXPECT_EQ(sink_->last_committed_epoch(), 2u);
  EXPECT_EQ(DirHashes(dir_), committed_files_) << "a refused epoch changed the checkpoint's files";
}

// A backup that cannot describe its disk (any failure but "cannot", which
// is ABSENT) says so: ERROR resource, its own failure, not a lost
// connection the primary would retry against the same fault.
TEST_F(DiskReceive, ADiskTheBackupCannotDescribeIsItsOwnFailure) {
  for (Status err : {Status::Storage("reading the disk image: EIO"), Status::InvalidArgument("chunks beyond the disk"),
                     Status::Internal("something else")}) {
    SCOPED_TRACE(err.ToString());
    describe_error_ = err;
    StartBackup();
    Hello(protocol::kCapDisk | protocol::kCapDiskDigests, protocol::kCapDisk);
    ExpectError(ErrorCode::kResource);
    EXPECT_NE(error_text_.find(err.message()), std::string::npos) << error_text_;
    EXPECT_EQ(end_.cause, restore::EndCause::kLocalFailure);
    serve_sink_.reset();
    sink_.reset();  // the next round's backup opens the same image
  }
}

// A state record the backup's sink cannot hold at all (Unsupported: a guest
// type it cannot resume, say) is told to the primary as a missing
// capability, with the sink's reason; any other sink failure stays ERROR
// resource. The checkpoint the backup holds is untouched either way.
TEST_F(DiskReceive, AStateTheSinkCannotHoldIsAMissingCapability) {
  struct Case {
    Status err;
    ErrorCode want;
  } cases[] = {{Status::Unsupported("the primary protects an HVM guest, which this backup cannot resume"),
                ErrorCode::kCapabilities},
               {Status::Storage("writing the state: No space left on device"), ErrorCode::kResource}};
  for (const Case& c : cases) {
    SCOPED_TRACE(c.err.ToString());
    StartBackup();
    CommitEpoch1();
    protocol::Bye bye;  // the primary stops replicating; the backup holds epoch 1
    bye.reason = protocol::ByeReason::kOperatorStop;
    ASSERT_TRUE(writer_->Send(bye, 0).ok());
    backup_.join();
    sink_.reset();
    state_error_ = c.err;  // a new session on the same image, whose sink refuses its state
    StartBackup();
    Hello(protocol::kCapDisk, protocol::kCapDisk, true, 2);
    const std::vector<uint8_t> record = {'X', '2', 5, 0, 't', '=', 'h', 'v', 'm'};
    ASSERT_TRUE(writer_->Write(FrameType::kState, 2, record).ok());
    ExpectError(c.want);
    EXPECT_NE(error_text_.find(c.err.message()), std::string::npos) << error_text_;
    ExpectEpoch1Kept();
    state_error_ = Status::Ok();
    serve_sink_.reset();
  }
}

// kCapDiskFloor (docs/DISK.md §7.4): a backup that holds the disk as of
// the session's own lineage describes it in DISK_DIGESTS exactly when its
// tag is older than the primary's change floor (the primary cannot bring it
// up to date by changed regions, so it copies the disk whole and leaves out
// what matches); at or after the floor it sends ABSENT; without the
// capability, ABSENT as before.
TEST_F(DiskReceive, ADiskHeldOlderThanThePrimarysChangesReachIsDescribed) {
  constexpr uint64_t kLineage = 0xABCD;
  constexpr uint64_t kTag = 7;
  const uint64_t caps = protocol::kCapDisk | protocol::kCapDiskDelta | protocol::kCapDiskDigests;
  // Sends a HELLO of lineage kLineage (with `floor` when given) and returns
  // the agreed capabilities, what the backup says it holds and its table.
  struct Answer {
    uint64_t capabilities = 0;
    std::vector<protocol::DiskHeld> held;
    std::shared_ptr<const protocol::DiskChunkTable> table;
  };
  auto hello = [&](uint64_t first_epoch, std::optional<uint64_t> floor) -> Answer {
    protocol::Hello h;
    h.first_epoch = first_epoch;
    h.capabilities = caps | (floor ? protocol::kCapDiskFloor : 0);
    h.required = protocol::kCapDisk;
    h.cache_pages = 16;
    h.guest_pages = 16;
    h.session_id = 3 + first_epoch;
    h.identity = "sim:size=64K,disk=1M";
    h.disks = {{kDiskId, kDiskSize, "xvda"}};
    h.disk_lineages = {kLineage};
    if (floor) h.disk_change_floors = {*floor};
    EXPECT_TRUE(writer_->Send(h, 0).ok());
    auto f = Next();
    EXPECT_TRUE(f.ok() && f->type() == FrameType::kHelloAck);
    if (!f.ok()) return {};
    auto ack = protocol::HelloAck::Decode(f->payload);
    EXPECT_TRUE(ack.ok() && ack->accepted);
    if (!ack.ok()) return {};
    Answer a{ack->capabilities, ack->disks_held, nullptr};
    EXPECT_NE(a.capabilities & protocol::kCapDiskDigests, 0u);
    auto tables = protocol::ReceiveDiskDigests(reader_.get(), h.disks, 5000ms);
    EXPECT_TRUE(tables.ok()) << tables.status().ToString();
    if (tables.ok() && tables->size() == 1) a.table = (*tables)[0];
    return a;
  };
  auto restart = [&](uint64_t epoch) {
    ASSERT_TRUE(writer_->Send(protocol::Bye{}, epoch).ok());
    backup_.join();
    sink_.reset();
    StartBackup();
  };

  // Session 1: epoch 1 commits the disk as of tag kTag of kLineage (a
  // first session offering floors too: the backup holds nothing to skip).
  StartBackup();
  Answer first = hello(1, 0);
  EXPECT_TRUE(first.held.empty());
  ASSERT_TRUE(first.table) << "a disk held as of no lineage is described";
  Page(1, 0x51);
  protocol::DiskFrameBuilder b;
  b.Reset(kDiskId);
  auto d = Block(0x11, 4 * 4096);
  ASSERT_TRUE(b.AddWrite(0, d, false, false));
  Disk(1, b);
  DiskEnd(1, kDiskId, 0, 0, kTag);
  EpochEnd(1);
  ExpectAck(1);
  const protocol::ChunkHash committed = protocol::DiskChunkHash(ReadDisk(path_ + ".disk7", 0, kDiskSize));

  // The primary still knows the changes since kTag (floor == kTag): no table.
  restart(1);
  Answer at_floor = hello(2, kTag);
  ASSERT_EQ(at_floor.held.size(), 1u);
  EXPECT_EQ(at_floor.held[0].lineage, kLineage);
  EXPECT_EQ(at_floor.held[0].tag, kTag);
  EXPECT_NE(at_floor.capabilities & protocol::kCapDiskFloor, 0u);
  EXPECT_FALSE(at_floor.table) << "described a disk the primary can update by its changed regions";

  // It has forgotten them (floor after kTag): the disk is described, as it is.
  restart(2);
  Answer past_floor = hello(2, kTag + 1);
  ASSERT_EQ(past_floor.held.size(), 1u);
  ASSERT_TRUE(past_floor.table) << "a copy older than the primary's changes reach was not described";
  ASSERT_EQ(past_floor.table->size(), 1u);
  EXPECT_EQ((*past_floor.table)[0], committed);

  // A primary that names no floors: no table, as before the capability.
  restart(2);
  Answer no_floor = hello(2, std::nullopt);
  EXPECT_EQ(no_floor.capabilities & protocol::kCapDiskFloor, 0u);
  EXPECT_FALSE(no_floor.table);
  ASSERT_TRUE(writer_->Send(protocol::Bye{}, 2).ok());  // not a lost primary
  backup_.join();
}

TEST_F(DiskReceive, DiskFramesWithoutTheCapabilityAreAProtocolError) {
  StartBackup();
  Hello(0, 0);
  protocol::DiskFrameBuilder b;
  b.Reset(kDiskId);
  ASSERT_TRUE(b.AddFlush());
  ASSERT_TRUE(writer_->Write(FrameType::kDisk, 1, b.payload()).ok());
  ExpectError(ErrorCode::kProtocol);
}

// kCapDiskSync (docs/DISK.md §7.1): a disk streamed over several epochs.
// Each such epoch is committed and acked (the copy goes on) but reported
// incomplete, with the disk and its progress; the first whole one is not.
TEST_F(DiskReceive, EpochsOfAStreamingCopyAreCommittedButNotResumable) {
  StartBackup();
  auto ack = Hello(protocol::kCapDisk | protocol::kCapDiskSync, protocol::kCapDisk);
  ASSERT_NE(ack.capabilities & protocol::kCapDiskSync, 0u);
  for (uint64_t epoch = 1; epoch <= 3; ++epoch) {
    Page(epoch, static_cast<uint8_t>(0x50 + epoch));
    protocol::DiskFrameBuilder b;
    b.Reset(kDiskId);
    auto w = Block(static_cast<uint8_t>(epoch), 4096);
    ASSERT_TRUE(b.AddWrite((epoch - 1) * 4096, w, false, false));
    Disk(epoch, b);
    // 37% after epoch 1, 99.9% after epoch 2, whole after epoch 3.
    DiskEnd(epoch, kDiskId, 0, epoch == 1 ? 1 + 370 : epoch == 2 ? 1 + 999 : 0);
    EpochEnd(epoch);
    ExpectAck(epoch);
    // Acked, but the sink holds no checkpoint until the disk is whole.
    EXPECT_EQ(sink_->has_committed(), epoch == 3) << epoch;
  }
  EXPECT_EQ(sink_->incomplete_commits(), 2u);
  ASSERT_TRUE(writer_->Send(protocol::Bye{}, 3).ok());
  auto bye = Next();
  ASSERT_TRUE(bye.ok() && bye->type() == FrameType::kBye);
  backup_.join();
  ASSERT_EQ(commits_.size(), 3u);
  EXPECT_EQ(commits_[0].second, "disk xvda is still being copied (37%)");
  EXPECT_EQ(commits_[1].second, "disk xvda is still being copied (99%)");
  EXPECT_EQ(commits_[2].second, "");
  EXPECT_EQ(sink_->last_committed_epoch(), 3u);
}

TEST_F(DiskReceive, ASyncStateWithoutTheCapabilityOrOutOfRangeIsAProtocolError) {
  for (uint32_t state : {1u, 1002u}) {
    sink_.reset();
    StartBackup();
    const uint64_t caps = state == 1 ? protocol::kCapDisk : protocol::kCapDisk | protocol::kCapDiskSync;
    Hello(caps, protocol::kCapDisk);
    Page(1, 0x51);
    // By hand: the encoder refuses a state above 1001.
    protocol::DiskEnd e;
    e.disk_id = kDiskId;
    std::vector<uint8_t> payload;
    ASSERT_TRUE(e.EncodeTo(&payload).ok());
    StoreLE32(payload.data() + 4, state);
    ASSERT_TRUE(writer_->Write(FrameType::kDiskEnd, 1, payload).ok());
    ExpectError(ErrorCode::kProtocol);
    EXPECT_FALSE(sink_->has_committed()) << state;
  }
}

// Until the held-replica images exist, a streaming copy must not replace a
// checkpoint whose disks are whole: a backup that holds one does not agree
// kCapDiskSync (the primary copies inside the first pause instead), and a
// primary that sends a sync state anyway is a protocol error; the
// checkpoint is kept.
TEST_F(DiskReceive, AStreamingCopyIsNotAgreedOverAWholeCheckpoint) {
  StartBackup();
  CommitEpoch1();
  ASSERT_TRUE(writer_->Send(protocol::Bye{}, 1).ok());
  ASSERT_TRUE(Next().ok());
  backup_.join();
  pair_.primary->Shutdown();
  // A new session, as after a reconnect: same backup, same sink.
  pair_ = test_engine::MakeStreamPair();
  backup_ = std::thread([this] { end_ = receiver_->Serve(*pair_.backup, *sink_, nullptr); });
  writer_ = std::make_unique<protocol::FrameWriter>(pair_.primary.get());
  reader_ = std::make_unique<protocol::FrameReader>(pair_.primary.get(), &rb_);
  auto ack = Hello(protocol::kCapDisk | protocol::kCapDiskSync, protocol::kCapDisk, true, /*first_epoch=*/2);
  EXPECT_EQ(ack.capabilities & protocol::kCapDiskSync, 0u);
  EXPECT_NE(ack.capabilities & protocol::kCapDisk, 0u);
  Page(2, 0x52);
  protocol::DiskFrameBuilder b;
  b.Reset(kDiskId);
  auto w = Block(0x66, 4096);
  ASSERT_TRUE(b.AddWrite(0, w, false, false));
  Disk(2, b);
  DiskEnd(2, kDiskId, 0, 1 + 500);
  EpochEnd(2);
  ExpectError(ErrorCode::kProtocol);
  EXPECT_EQ(end_.cause, restore::EndCause::kCorruptStream);
  ExpectEpoch1Kept();
}

using test_engine::MemoryOnlySink;  // keeps memory only, no disks

TEST(DiskCapability, ABackupThatCannotKeepDisksRefusesAPrimaryThatRequiresThem) {
  for (bool sink_can : {false, true}) {
    SCOPED_TRACE(sink_can ? "disks disabled by options" : "memory-only sink");
    auto pair = test_engine::MakeStreamPair();
    restore::ReceiverOptions ro;
    if (sink_can) ro.capabilities &= ~protocol::kCapDisk;
    restore::CheckpointReceiver receiver(ro);
    MemoryOnlySink memory_only;
    auto image = sim::ImageSink::Open({});
    ASSERT_TRUE(image.ok());
    restore::GuestSink& sink = sink_can ? static_cast<restore::GuestSink&>(**image) : memory_only;
    restore::SessionEnd end;
    std::thread backup([&] { end = receiver.Serve(*pair.backup, sink, nullptr); });
    protocol::FrameWriter w(pair.primary.get());
    protocol::Hello h;
    h.capabilities = h.required = protocol::kCapDisk;
    h.cache_pages = 16;
    h.guest_pages = 16;
    h.identity = "g";
    h.disks = {{1, kDiskSize, "xvda"}};
    ASSERT_TRUE(w.Send(h, 0).ok());
    buffer::ReusableBuffer rb(4096, 1 << 20);
    protocol::FrameReader r(pair.primary.get(), &rb);
    auto f = r.Next(transport::DeadlineIn(5000ms));
    ASSERT_TRUE(f.ok() && f->type() == FrameType::kHelloAck);
    auto ack = protocol::HelloAck::Decode(f->payload);
    ASSERT_TRUE(ack.ok());
    EXPECT_FALSE(ack->accepted);
    EXPECT_EQ(ack->error, ErrorCode::kCapabilities);
    EXPECT_NE(ack->text.find("cannot keep the guest's disks"), std::string::npos) << ack->text;
    EXPECT_EQ(ack->capabilities & protocol::kCapDisk, 0u);
    backup.join();
    EXPECT_FALSE(end.established);
  }
}

TEST(DiskCapability, AnImageSinkAgreesDisksWhenOffered) {
  auto pair = test_engine::MakeStreamPair();
  restore::CheckpointReceiver receiver(restore::ReceiverOptions{});
  auto image = sim::ImageSink::Open({});
  ASSERT_TRUE(image.ok());
  std::thread backup([&] { (void)receiver.Serve(*pair.backup, **image, nullptr); });
  protocol::FrameWriter w(pair.primary.get());
  protocol::Hello h;
  h.capabilities = h.required = protocol::kCapDisk;
  h.cache_pages = 16;
  h.guest_pages = 16;
  h.identity = "g";
  h.disks = {{1, kDiskSize, "xvda"}};
  ASSERT_TRUE(w.Send(h, 0).ok());
  buffer::ReusableBuffer rb(4096, 1 << 20);
  protocol::FrameReader r(pair.primary.get(), &rb);
  auto f = r.Next(transport::DeadlineIn(5000ms));
  ASSERT_TRUE(f.ok() && f->type() == FrameType::kHelloAck);
  auto ack = protocol::HelloAck::Decode(f->payload);
  ASSERT_TRUE(ack.ok());
  EXPECT_TRUE(ack->accepted) << ack->text;
  EXPECT_NE(ack->capabilities & protocol::kCapDisk, 0u);
  pair.primary->Shutdown();
  backup.join();
}

}  // namespace
}  // namespace romulus
