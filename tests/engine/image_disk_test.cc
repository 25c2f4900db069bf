// ImageSink disks (docs/DISK.md §6, docs/IMAGE-FORMAT.md): staged records
// are not applied before the commit; a crash at every commit step recovers
// memory AND disk to the same epoch (N-1 before the marker, N from it on);
// an old version-1 journal still recovers; a disk that does not match its
// recorded digest is not trusted.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <vector>

#include "common/digest.h"
#include "protocol/disk_records.h"
#include "sim/image_files.h"
#include "sim/image_sink.h"
#include "sim/image_view.h"
#include "sim/sim_disk.h"
#include "sim/sim_guest.h"
#include "sim/sim_spec.h"

namespace romulus::sim {
namespace {

namespace fs = std::filesystem;
constexpr uint64_t kPage = 4096;
constexpr uint64_t kPages = 16;
constexpr uint32_t kId = 3;
constexpr uint64_t kDiskBytes = 256 * 1024;
const std::string kIdentity = "sim:size=64K";

std::string MakeTempDir() {
  std::string dir = (fs::temp_directory_path() / "image_disk.XXXXXX").string();
  EXPECT_NE(mkdtemp(dir.data()), nullptr);
  return dir;
}

const std::vector<protocol::DiskInfo>& Disks() {
  static const std::vector<protocol::DiskInfo> d = {{kId, kDiskBytes, "xvdb"}};
  return d;
}

// The model: epoch e writes page e%kPages with e, and on the disk a 4 KiB
// block of byte e at block (e*5)%64, a 1 KiB write of e+100 at a block
// edge, and zeroes block (e*3)%64.
struct Model {
  std::vector<uint8_t> memory = std::vector<uint8_t>(kPages * kPage, 0);
  std::vector<uint8_t> disk = std::vector<uint8_t>(kDiskBytes, 0);
};

std::vector<Model> BuildModel(uint64_t epochs) {
  std::vector<Model> m(epochs + 1);
  for (uint64_t e = 1; e <= epochs; ++e) {
    m[e] = m[e - 1];
    std::memset(m[e].memory.data() + (e % kPages) * kPage, static_cast<int>(e), kPage);
    std::memset(m[e].disk.data() + (e * 5 % 64) * kPage, static_cast<int>(e), kPage);
    std::memset(m[e].disk.data() + (e * 7 % 64) * kPage + 3072, static_cast<int>(e + 100), 1024);
    std::memset(m[e].disk.data() + (e * 3 % 64) * kPage, 0, kPage);
  }
  return m;
}

Status SendEpoch(ImageSink& sink, const std::vector<Model>& m, uint64_t e) {
  ROMULUS_RETURN_IF_ERROR(sink.OnPage(e, e % kPages, m[e].memory.data() + (e % kPages) * kPage));
  protocol::DiskRecord r;
  r.kind = protocol::DiskRecordKind::kWrite;
  r.offset = (e * 5 % 64) * kPage;
  r.length = kPage;
  // The records of e in the order the model applied them.
  std::vector<uint8_t> full(kPage, static_cast<uint8_t>(e));
  r.data = full;
  ROMULUS_RETURN_IF_ERROR(sink.OnDisk(e, kId, r));
  std::vector<uint8_t> part(1024, static_cast<uint8_t>(e + 100));
  r.offset = (e * 7 % 64) * kPage + 3072;
  r.length = 1024;
  r.data = part;
  ROMULUS_RETURN_IF_ERROR(sink.OnDisk(e, kId, r));
  protocol::DiskRecord z;
  z.kind = protocol::DiskRecordKind::kZero;
  z.offset = (e * 3 % 64) * kPage;
  z.length = kPage;
  ROMULUS_RETURN_IF_ERROR(sink.OnDisk(e, kId, z));
  protocol::DiskRecord f;  // a flush: an ordering marker, nothing to store
  ROMULUS_RETURN_IF_ERROR(sink.OnDisk(e, kId, f));
  return sink.Commit(e);
}

std::vector<uint8_t> ReadFile(const std::string& path) {
  std::vector<uint8_t> b;
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return b;
  b.resize(kDiskBytes + 1);
  ssize_t n = ::pread(fd, b.data(), b.size(), 0);
  ::close(fd);
  b.resize(n < 0 ? 0 : static_cast<size_t>(n));
  return b;
}

uint64_t DigestOf(const std::vector<uint8_t>& bytes) {
  uint64_t sum = 0;
  for (uint64_t i = 0; i < bytes.size() / kPage; ++i) sum += PageHash(i, bytes.data() + i * kPage);
  return sum;
}

void ExpectRecoversTo(const std::string& path, const std::vector<Model>& m, uint64_t e) {
  ImageSinkOptions o;
  o.path = path;
  o.run_activated = false;
  auto r = ImageSink::Open(o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ImageSink& sink = **r;
  ASSERT_TRUE(sink.has_committed()) << sink.recovery_note();
  EXPECT_EQ(sink.last_committed_epoch(), e);
  EXPECT_EQ(std::memcmp(sink.image(), m[e].memory.data(), kPages * kPage), 0) << "memory of epoch " << e;
  EXPECT_EQ(ReadFile(path + ".disk3"), m[e].disk) << "disk of epoch " << e;
  ASSERT_EQ(sink.committed_disks().size(), 1u);
  EXPECT_EQ(sink.committed_disks()[0].digest, DigestOf(m[e].disk));
}

// Staging that keeps an epoch's first record (the 4 KiB write) in memory
// and spills the rest: the journal's disk section is then copied from both.
void SpillAfterTheFirstRecord(ImageSinkOptions* o) {
  o->max_disk_staging_bytes = kPage + 24 + 100;
  o->max_disk_spill_bytes = uint64_t{1} << 20;
}

TEST(ImageDiskTest, StagedRecordsAreAppliedOnlyAtCommitAndTheDigestFollows) {
  const std::vector<Model> m = BuildModel(6);
  const std::string dir = MakeTempDir();
  const std::string path = dir + "/g.img";
  ImageSinkOptions o;
  o.path = path;
  auto r = ImageSink::Open(o);
  ASSERT_TRUE(r.ok());
  ImageSink& sink = **r;
  ASSERT_TRUE(sink.BeginSessionWithDisks(kPages, kIdentity, Disks()).ok());
  EXPECT_EQ(fs::file_size(path + ".disk3"), kDiskBytes);
  ASSERT_TRUE(SendEpoch(sink, m, 1).ok());  // direct
  EXPECT_EQ(ReadFile(path + ".disk3"), m[1].disk);
  for (uint64_t e = 2; e <= 6; ++e) {
    // Stage without committing: the disk file is the previous epoch's.
    std::vector<uint8_t> block(kPage, 0xab);
    protocol::DiskRecord w;
    w.kind = protocol::DiskRecordKind::kWrite;
    w.offset = 0;
    w.length = kPage;
    w.data = block;
    ASSERT_TRUE(sink.OnDisk(e, kId, w).ok());
    EXPECT_GT(sink.staged_disk_bytes(), 0u);
    EXPECT_EQ(ReadFile(path + ".disk3"), m[e - 1].disk);
    sink.Discard();
    EXPECT_EQ(sink.staged_disk_bytes(), 0u);
    ASSERT_TRUE(SendEpoch(sink, m, e).ok());
    EXPECT_EQ(ReadFile(path + ".disk3"), m[e].disk);
    ASSERT_EQ(sink.committed_disks().size(), 1u);
    EXPECT_EQ(sink.committed_disks()[0].digest, DigestOf(m[e].disk)) << "epoch " << e;
  }
  // Out-of-range records and unknown disks are refused, nothing staged.
  protocol::DiskRecord bad;
  bad.kind = protocol::DiskRecordKind::kZero;
  bad.offset = kDiskBytes - 512;
  bad.length = 1024;
  EXPECT_EQ(sink.OnDisk(7, kId, bad).code(), Code::kCorruption);
  bad.offset = 0;
  EXPECT_EQ(sink.OnDisk(7, kId + 1, bad).code(), Code::kCorruption);
  r->reset();
  ExpectRecoversTo(path, m, 6);
  fs::remove_all(dir);
}

// An epoch whose disk data exceeds the memory bound spills, commits with
// one journal record (disk section copied from memory and spill), and the
// spill is empty again afterwards; beyond the spill bound it is refused and
// the previous checkpoint stays, exactly.
TEST(ImageDiskTest, AnEpochBeyondMemoryIsSpilledAndCommittedWhole) {
  const std::vector<Model> m = BuildModel(4);
  const std::string dir = MakeTempDir();
  const std::string path = dir + "/g.img";
  ImageSinkOptions o;
  o.path = path;
  SpillAfterTheFirstRecord(&o);
  auto r = ImageSink::Open(o);
  ASSERT_TRUE(r.ok());
  ImageSink& sink = **r;
  ASSERT_TRUE(sink.BeginSessionWithDisks(kPages, kIdentity, Disks()).ok());
  ASSERT_TRUE(SendEpoch(sink, m, 1).ok());  // direct: not staged
  EXPECT_EQ(sink.spilled_disk_bytes(), 0u);
  for (uint64_t e = 2; e <= 3; ++e) {
    // The whole disk as of e first (it does not fit memory: spilled whole),
    // then the model's records of e, which leave it so.
    protocol::DiskRecord w;
    w.kind = protocol::DiskRecordKind::kWrite;
    w.offset = 0;
    w.length = kDiskBytes;
    w.data = m[e].disk;
    ASSERT_TRUE(sink.OnDisk(e, kId, w).ok());
    EXPECT_GE(sink.spilled_disk_bytes(), kDiskBytes);
    EXPECT_EQ(ReadFile(path + ".disk3"), m[e - 1].disk) << "applied before the commit";
    sink.Discard();
    EXPECT_EQ(sink.spilled_disk_bytes(), 0u);
    ASSERT_TRUE(sink.OnDisk(e, kId, w).ok());
    ASSERT_TRUE(SendEpoch(sink, m, e).ok());
    EXPECT_EQ(sink.spilled_disk_bytes(), 0u);
    EXPECT_EQ(ReadFile(path + ".disk3"), m[e].disk) << "epoch " << e;
    EXPECT_EQ(sink.committed_disks()[0].digest, DigestOf(m[e].disk));
  }
  // The spill bound (1 MiB): whole-disk writes until one is refused, which
  // refuses the epoch; nothing of it is applied.
  ASSERT_TRUE(sink.OnPage(4, 1, m[4].memory.data() + kPage).ok());
  protocol::DiskRecord w;
  w.kind = protocol::DiskRecordKind::kWrite;
  w.offset = 0;
  w.length = kDiskBytes;
  w.data = m[4].disk;
  Status st;
  for (int i = 0; i < 6 && st.ok(); ++i) st = sink.OnDisk(4, kId, w);
  ASSERT_EQ(st.code(), Code::kOutOfRange) << st.ToString();
  EXPECT_NE(st.message().find("--max-disk-spill"), std::string::npos) << st.message();
  EXPECT_LE(sink.spilled_disk_bytes(), uint64_t{1} << 20);
  sink.Discard();
  r->reset();
  ExpectRecoversTo(path, m, 3);
  EXPECT_TRUE(fs::exists(path + ".disk3"));
  for (const auto& f : fs::directory_iterator(dir)) {
    EXPECT_EQ(f.path().filename().string().find(".romulus-spill"), std::string::npos) << "a spill file was left";
  }
  fs::remove_all(dir);
}

TEST(ImageDiskTest, TheLineageOfACommittedDiskIsKeptAcrossARestartAndOnlyWithAWholeCommit) {
  const std::vector<Model> m = BuildModel(4);
  const std::string dir = MakeTempDir();
  const std::string path = dir + "/g.img";
  ImageSinkOptions o;
  o.path = path;
  {
    auto r = ImageSink::Open(o);
    ASSERT_TRUE(r.ok());
    ImageSink& sink = **r;
    EXPECT_TRUE(sink.supports_disk_delta());
    ASSERT_TRUE(sink.BeginSessionWithDisks(kPages, kIdentity, Disks()).ok());
    EXPECT_TRUE(sink.held_disks().empty()) << "nothing committed, nothing held";
    sink.StageDiskLineage(kId, 0xABCD, 11);
    ASSERT_TRUE(SendEpoch(sink, m, 1).ok());
    ASSERT_EQ(sink.held_disks().size(), 1u);
    EXPECT_EQ(sink.held_disks()[0], (protocol::DiskHeld{kId, 0xABCD, 11}));
    sink.StageDiskLineage(kId, 0xABCD, 12);
    ASSERT_TRUE(SendEpoch(sink, m, 2).ok());  // journaled
    EXPECT_EQ(sink.held_disks()[0].tag, 12u);
    // Staged but discarded: the committed lineage stays.
    sink.StageDiskLineage(kId, 0xABCD, 13);
    sink.Discard();
    EXPECT_EQ(sink.held_disks()[0].tag, 12u);
  }
  {
    // PATH.state keeps it: a restarted backup names what it holds.
    auto r = ImageSink::Open(o);
    ASSERT_TRUE(r.ok());
    ImageSink& sink = **r;
    ASSERT_TRUE(sink.BeginSessionWithDisks(kPages, kIdentity, Disks()).ok());
    ASSERT_EQ(sink.held_disks().size(), 1u);
    EXPECT_EQ(sink.held_disks()[0], (protocol::DiskHeld{kId, 0xABCD, 12}));
    // A commit from a session that cannot name it forgets it.
    sink.StageDiskLineage(kId, 0, 0);
    ASSERT_TRUE(SendEpoch(sink, m, 3).ok());
    EXPECT_TRUE(sink.held_disks().empty());
  }
  {
    auto r = ImageSink::Open(o);
    ASSERT_TRUE(r.ok());
    ASSERT_TRUE((*r)->BeginSessionWithDisks(kPages, kIdentity, Disks()).ok());
    EXPECT_TRUE((*r)->held_disks().empty());
  }
  fs::remove_all(dir);
}

TEST(ImageDiskTest, ALargeDiskIsNamedOnlyWhenItsCommitsAreDurable) {
  // Above kMaxDigestedDisk nothing checks the disk at Open: without
  // --durable a power loss could have undone writes PATH.state counts, and
  // a copy of only the changes would never repair them.
  const std::vector<protocol::DiskInfo> big = {{kId, kMaxDigestedDisk + (1 << 20), "xvdb"}};
  for (bool durable : {false, true}) {
    const std::string dir = MakeTempDir();
    ImageSinkOptions o;
    o.path = dir + "/g.img";
    o.durable = durable;
    auto r = ImageSink::Open(o);
    ASSERT_TRUE(r.ok());
    ImageSink& sink = **r;
    ASSERT_TRUE(sink.BeginSessionWithDisks(kPages, kIdentity, big).ok());
    std::vector<uint8_t> page(kPage, 1);
    ASSERT_TRUE(sink.OnPage(1, 0, page.data()).ok());
    sink.StageDiskLineage(kId, 0xABCD, 5);
    ASSERT_TRUE(sink.Commit(1).ok());
    EXPECT_EQ(sink.held_disks().size(), durable ? 1u : 0u) << "durable " << durable;
    fs::remove_all(dir);
  }
}

TEST(ImageDiskTest, ADifferentDiskListIsRefusedWhileCommittedUnlessStartingOver) {
  const std::vector<Model> m = BuildModel(1);
  const std::string dir = MakeTempDir();
  ImageSinkOptions o;
  o.path = dir + "/g.img";
  {
    auto r = ImageSink::Open(o);
    ASSERT_TRUE(r.ok());
    ASSERT_TRUE((*r)->BeginSessionWithDisks(kPages, kIdentity, Disks()).ok());
    ASSERT_TRUE(SendEpoch(**r, m, 1).ok());
    std::vector<protocol::DiskInfo> bigger = {{kId, kDiskBytes * 2, "xvdb"}};
    Status s = (*r)->BeginSessionWithDisks(kPages, kIdentity, bigger);
    EXPECT_EQ(s.code(), Code::kInvalidArgument) << s.ToString();
    EXPECT_NE(s.message().find("other disk"), std::string::npos) << s.ToString();
    EXPECT_FALSE((*r)->BeginSession(kPages, kIdentity).ok()) << "a session without the committed disk";
    ASSERT_TRUE((*r)->BeginSessionWithDisks(kPages, kIdentity, Disks()).ok()) << "the same disks: kept";
    EXPECT_EQ((*r)->last_committed_epoch(), 1u);
  }
  ExpectRecoversTo(o.path, m, 1);
  o.start_over = true;
  auto r = ImageSink::Open(o);
  ASSERT_TRUE(r.ok());
  std::vector<protocol::DiskInfo> bigger = {{kId, kDiskBytes * 2, "xvdb"}};
  ASSERT_TRUE((*r)->BeginSessionWithDisks(kPages, kIdentity, bigger).ok());
  EXPECT_EQ(fs::file_size(o.path + ".disk3"), kDiskBytes * 2);
  fs::remove_all(dir);
}

// Forks a backup that commits epochs 1..k with disks, then dies at `step`
// inside the commit of k+1.
void CrashChild(const std::string& path, const std::vector<Model>& m, uint64_t k, CommitStep step, bool durable,
                bool spill = false) {
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ImageSinkOptions o;
    o.path = path;
    o.durable = durable;
    o.run_activated = false;
    if (spill) SpillAfterTheFirstRecord(&o);
    auto r = ImageSink::Open(o);
    if (!r.ok() || !(*r)->BeginSessionWithDisks(kPages, kIdentity, Disks()).ok()) _exit(2);
    for (uint64_t e = 1; e <= k; ++e) {
      if (!SendEpoch(**r, m, e).ok()) _exit(3);
    }
    (*r)->set_crash_at(step);
    Status s = SendEpoch(**r, m, k + 1);
    _exit(s.ok() ? 4 : 5);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
      << CommitStepName(step) << ": child ended with status " << status;
}

TEST(ImageDiskTest, ACrashAtEveryCommitStepRecoversMemoryAndDiskToTheSameEpoch) {
  const uint64_t k = 3;
  const std::vector<Model> m = BuildModel(k + 2);
  for (bool spill : {false, true})
  for (bool durable : {false, true}) {
    for (const std::string& name : CommitStepNames()) {
      SCOPED_TRACE(name + (durable ? " (durable)" : "") + (spill ? " (spilled epoch)" : ""));
      CommitStep step;
      ASSERT_TRUE(ParseCommitStep(name, &step));
      const std::string dir = MakeTempDir();
      const std::string path = dir + "/g.img";
      CrashChild(path, m, k, step, durable, spill);
      const uint64_t expect = step < CommitStep::kJournalMarker ? k : k + 1;
      ExpectRecoversTo(path, m, expect);
      // Replay is idempotent: a second Open (nothing left to replay) agrees.
      ExpectRecoversTo(path, m, expect);
      {
        ImageSinkOptions o;
        o.path = path;
        o.run_activated = false;
        if (spill) SpillAfterTheFirstRecord(&o);
        auto r = ImageSink::Open(o);
        ASSERT_TRUE(r.ok());
        ASSERT_TRUE((*r)->BeginSessionWithDisks(kPages, kIdentity, Disks()).ok());
        for (uint64_t e = expect + 1; e <= k + 2; ++e) ASSERT_TRUE(SendEpoch(**r, m, e).ok());
      }
      ExpectRecoversTo(path, m, k + 2);
      fs::remove_all(dir);
    }
  }
}

TEST(ImageDiskTest, ACrashInTheFirstCommitLeavesNothingOrEpochOneWithItsDisk) {
  const std::vector<Model> m = BuildModel(1);
  for (CommitStep step : {CommitStep::kStateTmp, CommitStep::kStateRename}) {
    SCOPED_TRACE(CommitStepName(step));
    const std::string dir = MakeTempDir();
    CrashChild(dir + "/g.img", m, 0, step, false);
    if (step == CommitStep::kStateRename) {
      ExpectRecoversTo(dir + "/g.img", m, 1);
    } else {
      ImageSinkOptions o;
      o.path = dir + "/g.img";
      auto r = ImageSink::Open(o);
      ASSERT_TRUE(r.ok());
      EXPECT_FALSE((*r)->has_committed());
    }
    fs::remove_all(dir);
  }
}

TEST(ImageDiskTest, ADamagedDiskFileIsNotTrusted) {
  const std::vector<Model> m = BuildModel(2);
  const std::string dir = MakeTempDir();
  ImageSinkOptions o;
  o.path = dir + "/g.img";
  {
    auto r = ImageSink::Open(o);
    ASSERT_TRUE(r.ok());
    ASSERT_TRUE((*r)->BeginSessionWithDisks(kPages, kIdentity, Disks()).ok());
    ASSERT_TRUE(SendEpoch(**r, m, 1).ok());
    ASSERT_TRUE(SendEpoch(**r, m, 2).ok());
  }
  int fd = ::open((o.path + ".disk3").c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  const uint8_t junk = 0x5f;
  ASSERT_EQ(::pwrite(fd, &junk, 1, 40 * kPage + 17), 1);
  ::close(fd);
  auto r = ImageSink::Open(o);
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE((*r)->has_committed());
  EXPECT_NE((*r)->recovery_note().find("digest"), std::string::npos) << (*r)->recovery_note();
  fs::remove_all(dir);
}

TEST(ImageDiskTest, VerifysViewSeesTheDiskOfAPendingJournalRecord) {
  // Crash after the marker, before the apply: the disk file is still N-1,
  // the journal holds N; the read-only view must show N (what a restart
  // replays) without writing anything.
  const std::vector<Model> m = BuildModel(3);
  for (bool spill : {false, true}) {
  SCOPED_TRACE(spill ? "spilled epoch" : "epoch staged in memory");
  const std::string dir = MakeTempDir();
  const std::string path = dir + "/g.img";
  CrashChild(path, m, 2, CommitStep::kJournalMarker, false, spill);
  EXPECT_EQ(ReadFile(path + ".disk3"), m[2].disk) << "not applied yet";
  auto v = ImageView::Open(path);
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_EQ((*v)->epoch(), 3u);
  ASSERT_EQ((*v)->disks().size(), 1u);
  std::vector<uint8_t> disk(kDiskBytes);
  ASSERT_TRUE((*v)->ReadDisk(kId, 0, disk).ok());
  EXPECT_EQ(disk, m[3].disk);
  auto dg = (*v)->DiskDigest(kId);
  ASSERT_TRUE(dg.ok());
  EXPECT_EQ(*dg, (*v)->disks()[0].digest);
  EXPECT_EQ(*dg, DigestOf(m[3].disk));
  EXPECT_EQ(ReadFile(path + ".disk3"), m[2].disk) << "the view wrote to the disk file";
  std::vector<uint8_t> one(512);
  EXPECT_FALSE((*v)->ReadDisk(kId, kDiskBytes - 256, one).ok());
  EXPECT_FALSE((*v)->ReadDisk(kId + 1, 0, one).ok());
  fs::remove_all(dir);
  }
}

// A full filesystem under the disk files: every failed commit keeps N-1
// (memory and disk, in the process and after a restart), and the next
// commit with space succeeds.
TEST(ImageDiskTest, DiskFullDuringACommitKeepsThePreviousEpoch) {
  std::string dir = MakeTempDir();
  if (::mount("tmpfs", dir.c_str(), "tmpfs", 0, "size=2097152") != 0) {
    fs::remove_all(dir);
    GTEST_SKIP() << "cannot mount a tmpfs here (" << strerror(errno) << "): needs root";
  }
  const std::string path = dir + "/g.img";
  const std::vector<Model> m = BuildModel(1);
  ImageSinkOptions o;
  o.path = path;
  o.run_activated = false;
  auto r = ImageSink::Open(o);
  ASSERT_TRUE(r.ok());
  std::unique_ptr<ImageSink> sink = std::move(*r);
  ASSERT_TRUE(sink->BeginSessionWithDisks(kPages, kIdentity, Disks()).ok());
  ASSERT_TRUE(SendEpoch(*sink, m, 1).ok());
  // Fill the filesystem, then stage an epoch whose disk write needs more
  // blocks than are left (the disk is sparse: its holes need space).
  const std::string filler = dir + "/filler";
  int fd = ::open(filler.c_str(), O_RDWR | O_CREAT, 0600);
  ASSERT_GE(fd, 0);
  struct statvfs v;
  ASSERT_EQ(::statvfs(dir.c_str(), &v), 0);
  const uint64_t free_bytes = uint64_t{v.f_bavail} * v.f_frsize;
  ASSERT_EQ(::fallocate(fd, 0, 0, static_cast<off_t>(free_bytes - 8 * kPage)), 0) << strerror(errno);
  ::close(fd);
  const auto disk_before = ReadFile(path + ".disk3");
  std::vector<uint8_t> big(kDiskBytes / 2, 0x6b);
  protocol::DiskRecord w;
  w.kind = protocol::DiskRecordKind::kWrite;
  w.offset = kDiskBytes / 2;
  w.length = big.size();
  w.data = big;
  ASSERT_TRUE(sink->OnDisk(2, kId, w).ok());
  Status s = sink->Commit(2);
  ASSERT_EQ(s.code(), Code::kStorage) << s.ToString();
  EXPECT_NE(s.message().find("still holding epoch 1"), std::string::npos) << s.ToString();
  EXPECT_EQ(sink->last_committed_epoch(), 1u);
  EXPECT_FALSE(sink->replay_pending());
  EXPECT_EQ(ReadFile(path + ".disk3"), disk_before);
  EXPECT_EQ(sink->committed_disks()[0].digest, DigestOf(m[1].disk));
  sink.reset();
  // Space again first: ExpectRecoversTo compares through the image's
  // mapping, and a read fault on a tmpfs hole allocates (SIGBUS when full).
  ::unlink(filler.c_str());
  ExpectRecoversTo(path, m, 1);
  // With space the same epoch commits.
  {
    auto again = ImageSink::Open(o);
    ASSERT_TRUE(again.ok());
    ASSERT_TRUE((*again)->BeginSessionWithDisks(kPages, kIdentity, Disks()).ok());
    ASSERT_TRUE((*again)->OnDisk(2, kId, w).ok());
    ASSERT_TRUE((*again)->Commit(2).ok());
    EXPECT_EQ((*again)->last_committed_epoch(), 2u);
    std::vector<uint8_t> want = m[1].disk;
    std::memcpy(want.data() + kDiskBytes / 2, big.data(), big.size());
    EXPECT_EQ(ReadFile(path + ".disk3"), want);
    EXPECT_EQ((*again)->committed_disks()[0].digest, DigestOf(want));
  }
  ::umount2(dir.c_str(), MNT_DETACH);
  fs::remove_all(dir);
}

// A simulated guest with a disk, checkpointed by hand (memory, state and
// its disk file as one epoch), resumes on the backup with its disk: the
// disk holds exactly the records its memory says were written, and the
// resumed writer continues on the backup's disk file.
TEST(ImageDiskTest, ActivationResumesTheSimGuestOnItsDisk) {
  const std::string dir = MakeTempDir();
  auto spec = ParseSimSpec("sim:size=1M,workload=seed,rate=max,disk=64K");
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  ASSERT_TRUE(SimGuest::CreateDiskFile(dir + "/primary.disk", spec->disk_bytes).ok());
  auto guest = SimGuest::Create(*spec);
  ASSERT_TRUE(guest.ok());
  ASSERT_TRUE((*guest)->OpenDisk(dir + "/primary.disk").ok());
  ASSERT_TRUE((*guest)->RunSteps(40).ok());
  std::vector<uint8_t> state;
  ASSERT_TRUE((*guest)->CaptureState(&state).ok());
  auto records = SimDiskRecordsInState(state);
  ASSERT_TRUE(records.ok());
  ASSERT_GT(*records, 0u);
  std::vector<uint8_t> disk(spec->disk_bytes);
  int pfd = ::open((dir + "/primary.disk").c_str(), O_RDONLY);
  ASSERT_GE(pfd, 0);
  ASSERT_EQ(::pread(pfd, disk.data(), disk.size(), 0), static_cast<ssize_t>(disk.size()));
  ::close(pfd);

  ImageSinkOptions o;
  o.path = dir + "/g.img";
  o.run_activated = false;
  auto r = ImageSink::Open(o);
  ASSERT_TRUE(r.ok());
  ImageSink& sink = **r;
  const std::vector<protocol::DiskInfo> disks = {{0, spec->disk_bytes, "xvda"}};
  ASSERT_TRUE(sink.BeginSessionWithDisks(spec->pages(), spec->ToString(), disks).ok());
  for (uint64_t pfn = 0; pfn < spec->pages(); ++pfn) {
    ASSERT_TRUE(sink.OnPage(1, pfn, (*guest)->memory() + pfn * kPage).ok());
  }
  ASSERT_TRUE(sink.OnState(1, state).ok());
  protocol::DiskRecord w;
  w.kind = protocol::DiskRecordKind::kWrite;
  w.length = disk.size();
  w.data = disk;
  ASSERT_TRUE(sink.OnDisk(1, 0, w).ok());
  ASSERT_TRUE(sink.Commit(1).ok());
  // What verify checks: the backup's disk holds exactly the records.
  auto read = [&](uint64_t off, std::span<uint8_t> out) -> Status {
    if (::pread(sink.disk_fd(0), out.data(), out.size(), static_cast<off_t>(off)) !=
        static_cast<ssize_t>(out.size())) {
      return Status::Storage("short read");
    }
    return Status::Ok();
  };
  EXPECT_TRUE(CheckSimDisk(*spec, *records, read).ok());
  // One record fewer is not what the memory says: the check can fail.
  EXPECT_FALSE(CheckSimDisk(*spec, *records - 1, read).ok());

  ASSERT_TRUE(sink.Activate("test").ok());
  SimGuest* resumed = sink.activated_guest();
  ASSERT_NE(resumed, nullptr);
  ASSERT_TRUE(resumed->RunSteps(30).ok());
  std::vector<uint8_t> after;
  ASSERT_TRUE(resumed->CaptureState(&after).ok());
  auto more = SimDiskRecordsInState(after);
  ASSERT_TRUE(more.ok());
  EXPECT_GT(*more, *records);
  // The resumed writer continues on a copy of the checkpoint's disk
  // (PATH.disk<id>.live), which holds every record it wrote...
  auto read_file = [&](const std::string& path) {
    return [path](uint64_t off, std::span<uint8_t> out) -> Status {
      int fd = ::open(path.c_str(), O_RDONLY);
      ssize_t n = fd < 0 ? -1 : ::pread(fd, out.data(), out.size(), static_cast<off_t>(off));
      if (fd >= 0) ::close(fd);
      return n == static_cast<ssize_t>(out.size()) ? Status::Ok() : Status::Storage("short read");
    };
  };
  EXPECT_TRUE(CheckSimDisk(*spec, *more, read_file(sink.disk_path(0) + ".live")).ok());
  // ...while the checkpoint's own disk stays exactly epoch 1, verifiable.
  EXPECT_TRUE(CheckSimDisk(*spec, *records, read_file(sink.disk_path(0))).ok());
  EXPECT_FALSE(CheckSimDisk(*spec, *more, read_file(sink.disk_path(0))).ok());
  r->reset();
  fs::remove_all(dir);
}

TEST(ImageDiskTest, AnInMemorySinkKeepsDisksToo) {
  const std::vector<Model> m = BuildModel(4);
  auto r = ImageSink::Open({});
  ASSERT_TRUE(r.ok());
  ASSERT_TRUE((*r)->BeginSessionWithDisks(kPages, kIdentity, Disks()).ok());
  for (uint64_t e = 1; e <= 4; ++e) ASSERT_TRUE(SendEpoch(**r, m, e).ok());
  std::vector<uint8_t> disk(kDiskBytes);
  ASSERT_EQ(::pread((*r)->disk_fd(kId), disk.data(), disk.size(), 0), static_cast<ssize_t>(kDiskBytes));
  EXPECT_EQ(disk, m[4].disk);
  EXPECT_EQ((*r)->committed_disks()[0].digest, DigestOf(m[4].disk));
}

}  // namespace
}  // namespace romulus::sim
