// The primary's liveness rules against a scripted backup (docs/PROTOCOL.md §6):
//  - when the primary gives up on a backup it says so (ERROR kResync), then
//    keeps reading the old connection until the backup's EOF, so a backup
//    that was stalled (SIGSTOP, starvation) and resumes reads a clean
//    "resync" and never a reset it could take for the primary's death;
//  - a backup that is alive (heartbeats) and reading slowly is backpressure:
//    the full sync waits for it, whatever the write and ack timeouts;
//  - a backup whose heartbeats run but whose receive loop is wedged is still
//    caught on a later epoch, by the ack timeout.
// Real kernel TCP over loopback where reset/half-close semantics matter.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <future>
#include <mutex>
#include <random>
#include <thread>

#include "buffer/reusable_buffer.h"
#include "protocol/frame_io.h"
#include "protocol/messages.h"
#include "replicator/checkpoint_sender.h"
#include "replicator/primary_controller.h"
#include "replicator/timer_driver.h"
#include "replicator/output_commit.h"
#include "tests/transport/test_util.h"
#include "transport/fd_stream.h"
#include "transport/security.h"
#include "transport/tcp.h"

namespace romulus {
namespace {

using namespace std::chrono_literals;
using protocol::FrameType;
using transport::DeadlineIn;

// Generous bound for anything that must happen "promptly": a failure to
// meet it is a hang, not a slow machine.
constexpr auto kBound = 20s;

struct TcpPair {
  std::unique_ptr<transport::Stream> primary, backup;
};

// The primary's end is a real TcpStream (transport::Connect); the backup's
// is a plain accepted socket, so the test depends on nothing but the kernel
// for what the backup sees (data, EOF or a reset).
TcpPair MakeTcpPair() {
  int lfd = ::socket(AF_INET, SOCK_STREAM, 0);
  EXPECT_GE(lfd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  EXPECT_EQ(::bind(lfd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  EXPECT_EQ(::listen(lfd, 1), 0);
  EXPECT_EQ(::getsockname(lfd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  transport::Security sec;
  sec.mode = transport::Security::Mode::kInsecure;
  auto ctx = transport::SecurityContext::Load(sec);
  EXPECT_TRUE(ctx.ok());
  auto primary = transport::Connect("127.0.0.1", ntohs(addr.sin_port), *ctx, 5s);
  EXPECT_TRUE(primary.ok()) << primary.status().ToString();
  int bfd = ::accept(lfd, nullptr, nullptr);
  ::close(lfd);
  EXPECT_GE(bfd, 0);
  auto backup = transport::OpenFdStream(bfd, bfd, "scripted-backup", true);
  EXPECT_TRUE(backup.ok());
  return {std::move(*primary), std::move(*backup)};
}

// Random (incompressible) pages, so the wire carries what the test expects.
std::vector<uint8_t> RandomPages(uint64_t pages, uint64_t seed) {
  std::vector<uint8_t> mem(pages * 4096);
  std::mt19937_64 rng(seed);
  for (size_t i = 0; i < mem.size(); i += 8) {
    uint64_t v = rng();
    std::memcpy(&mem[i], &v, 8);
  }
  return mem;
}

// A backup driven step by step by the test: it answers the handshake, sends
// heartbeats from its own thread (like restore/) until "stopped", and reads
// frames only when told to, so a SIGSTOP is just "do nothing for a while".
class ScriptedBackup {
 public:
  explicit ScriptedBackup(std::unique_ptr<transport::Stream> stream)
      : stream_(std::move(stream)), writer_(stream_.get()), rb_(4096, 16u << 20), reader_(stream_.get(), &rb_) {}
  ~ScriptedBackup() {
    StopHeartbeats();
    if (stream_) stream_->Shutdown();
  }

  Status Handshake() {
    auto f = reader_.Next(DeadlineIn(kBound));
    if (!f.ok()) return f.status();
    auto hello = protocol::Hello::Decode(f->payload);
    if (!hello.ok()) return hello.status();
    hello_ = *hello;
    protocol::HelloAck ack;
    ack.accepted = true;
    ack.capabilities = hello->required | protocol::kCapSimGuest;
    ack.session_id = hello->session_id;
    return writer_.Send(ack, 0);
  }
  void StartHeartbeats(std::chrono::milliseconds every) {
    beating_ = true;
    beats_ = std::thread([this, every] {
      std::unique_lock<std::mutex> lock(mu_);
      while (beating_) {
        cv_.wait_for(lock, every);
        if (!beating_) break;
        lock.unlock();
        (void)SendHeartbeat();
        lock.lock();
      }
    });
  }
  void StopHeartbeats() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      beating_ = false;
    }
    cv_.notify_all();
    if (beats_.joinable()) beats_.join();
  }
  Status SendHeartbeat() {
    protocol::Heartbeat hb;
    return writer_.Send(hb, 0, DeadlineIn(kBound));
  }
  Status SendAck(uint64_t epoch, uint64_t digest) {
    protocol::Ack a;
    a.epoch = epoch;
    a.digest = digest;
    return writer_.Send(a, epoch, DeadlineIn(kBound));
  }
  Status SendError(protocol::ErrorCode code, std::string text) {
    return writer_.Send(protocol::Error::Make(code, std::move(text)), 0, DeadlineIn(kBound));
  }
  // Closes with unread data queued: the kernel answers the primary's next
  // write with a reset, as a backup that refused and exited does.
  void Close() {
    StopHeartbeats();
    stream_.reset();
  }
  Result<protocol::Frame> Next() { return reader_.Next(DeadlineIn(kBound)); }
  // Reads up to and including EPOCH_END; returns its digest.
  Result<uint64_t> ReadEpoch(std::chrono::milliseconds pause_between_frames = 0ms) {
    for (;;) {
      auto f = Next();
      if (!f.ok()) return f.status();
      if (pause_between_frames.count() > 0) std::this_thread::sleep_for(pause_between_frames);
      if (f->type() == FrameType::kEpochEnd) {
        auto ee = protocol::EpochEnd::Decode(f->payload);
        if (!ee.ok()) return ee.status();
        return ee->digest;
      }
      if (f->type() != FrameType::kPages && f->type() != FrameType::kState &&
          f->type() != FrameType::kHeartbeat) {
        return Status::Corruption("unexpected " + protocol::FrameTypeName(f->header.type));
      }
    }
  }
  transport::Stream& stream() { return *stream_; }
  const protocol::Hello& hello() const { return hello_; }

 private:
  std::unique_ptr<transport::Stream> stream_;
  protocol::FrameWriter writer_;
  buffer::ReusableBuffer rb_;
  protocol::FrameReader reader_;
  protocol::Hello hello_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool beating_ = false;
  std::thread beats_;
};

replicator::SenderOptions FastOptions() {
  replicator::SenderOptions o;
  o.codec.cache_pages = 256;
  o.outbuf_bytes = 4u << 20;
  o.max_batch_bytes = 1u << 20;
  o.heartbeat_interval = 50ms;
  o.peer_timeout = 300ms;
  o.write_timeout = 300ms;  // first_epoch_write_timeout: the default (none)
  return o;
}

Result<std::unique_ptr<replicator::CheckpointSender>> StartSender(std::unique_ptr<transport::Stream> s,
                                                                   ScriptedBackup* backup,
                                                                   const replicator::SenderOptions& o,
                                                                   uint64_t pages) {
  replicator::GuestInfo info;
  info.guest_pages = pages;
  info.identity = "liveness-test";
  auto hs = std::async(std::launch::async, [&] { return backup->Handshake(); });
  auto sender = replicator::CheckpointSender::Start(std::move(s), o, info);
  EXPECT_TRUE(hs.get().ok());
  return sender;
}

Status SendEpoch(replicator::CheckpointSender& s, uint64_t epoch, const std::vector<uint8_t>& mem) {
  ROMULUS_RETURN_IF_ERROR(s.BeginEpoch(epoch));
  for (uint64_t pfn = 0; pfn < mem.size() / 4096; ++pfn) ROMULUS_RETURN_IF_ERROR(s.AddPage(pfn, &mem[pfn * 4096]));
  auto w = s.EndEpoch();
  return w.ok() ? Status::Ok() : w.status();
}

// Destroys the sender as EpochLoop::LoseBackup does, on a thread with a
// bound: giving up must not wait for the (stalled) backup.
void AbandonPromptly(std::unique_ptr<replicator::CheckpointSender> sender) {
  auto done = std::async(std::launch::async, [s = std::move(sender)]() mutable { s.reset(); });
  ASSERT_EQ(done.wait_for(kBound), std::future_status::ready) << "abandoning the session blocked";
}

// What a resumed backup reads after the primary gave up: frames in order,
// then the ERROR, then a clean EOF (never a reset). Its own writes meanwhile
// (heartbeats, the ack it was about to send) must all succeed.
void ExpectResyncThenEof(ScriptedBackup& b) {
  bool saw_resync = false;
  for (int frames = 0;; ++frames) {
    ASSERT_LT(frames, 100000) << "no end in sight";
    auto f = b.Next();
    if (!f.ok()) {
      ASSERT_EQ(f.status().code(), Code::kClosed) << f.status().ToString();
      ASSERT_TRUE(saw_resync) << "EOF without ERROR resync: the backup would take this for the primary's death ("
                              << f.status().ToString() << ")";
      break;
    }
    ASSERT_FALSE(saw_resync) << "frame after ERROR";
    if (f->type() == FrameType::kError) {
      auto err = protocol::Error::Decode(f->payload);
      ASSERT_TRUE(err.ok());
      EXPECT_EQ(err->code, static_cast<uint16_t>(protocol::ErrorCode::kResync)) << protocol::Printable(err->text);
      EXPECT_EQ(protocol::ErrorCodeName(err->code), "resync");
      EXPECT_FALSE(err->text.empty());
      saw_resync = true;
      // Still inside the drain window: the primary reads what we write.
      ASSERT_TRUE(b.SendHeartbeat().ok());
      continue;
    }
    if (f->type() == FrameType::kEpochEnd) {
      auto ee = protocol::EpochEnd::Decode(f->payload);
      ASSERT_TRUE(ee.ok());
      Status acked = b.SendAck(f->epoch(), ee->digest);  // the ack a resumed backup sends
      ASSERT_TRUE(acked.ok()) << acked.ToString();
    }
  }
  // After our EOF reached the primary it closes; the write we made after
  // its ERROR was read, not reset: the stream ends cleanly.
  Status hb = b.SendHeartbeat();
  EXPECT_TRUE(hb.ok() || hb.code() == Code::kClosed) << hb.ToString();
}

// Epoch 1 sent, read by the backup and acked, the ack seen by the primary.
void CommitFirstEpoch(replicator::CheckpointSender& sender, ScriptedBackup& backup, const std::vector<uint8_t>& mem) {
  ASSERT_TRUE(SendEpoch(sender, 1, mem).ok());
  auto d1 = backup.ReadEpoch();
  ASSERT_TRUE(d1.ok()) << d1.status().ToString();
  ASSERT_TRUE(backup.SendAck(1, *d1).ok());
  ASSERT_TRUE(sender.WaitAck(1, 5000ms).ok());
}

// The backup is SIGSTOPped between two epochs, the primary gives up on the
// missing ack, then the backup resumes.
void StallBetweenEpochsThenResume(TcpPair pair) {
  ScriptedBackup backup(std::move(pair.backup));
  const auto mem = RandomPages(64, 1);
  auto sender = StartSender(std::move(pair.primary), &backup, FastOptions(), 64);
  ASSERT_TRUE(sender.ok()) << sender.status().ToString();
  backup.StartHeartbeats(50ms);
  ASSERT_NO_FATAL_FAILURE(CommitFirstEpoch(**sender, backup, mem));

  // SIGSTOP: no heartbeat, no read. Epoch 2 fits the socket buffers; its ack
  // never comes, and the primary gives up.
  backup.StopHeartbeats();
  ASSERT_TRUE(SendEpoch(**sender, 2, mem).ok());
  Status waited = (*sender)->WaitAck(2, 300ms);
  ASSERT_FALSE(waited.ok());
  AbandonPromptly(std::move(*sender));

  // SIGCONT: the backup carries on where it was.
  Status hb = backup.SendHeartbeat();
  ASSERT_TRUE(hb.ok()) << hb.ToString();
  ExpectResyncThenEof(backup);
}

TEST(SenderLiveness, StalledBackupReadsResyncAndEofNotReset) { StallBetweenEpochsThenResume(MakeTcpPair()); }

// A planned switchover whose session had already failed: the primary's
// guest is paused for good, so the backup must not read "resync" (it would
// hold its checkpoint for a primary that never comes back, and no copy
// would run); it reads the end of the connection and fails over on its own.
TEST(SenderLiveness, AHandoverOnAFailedSessionCutsWithoutResync) {
  auto pair = MakeTcpPair();
  ScriptedBackup backup(std::move(pair.backup));
  const auto mem = RandomPages(64, 3);
  auto sender = StartSender(std::move(pair.primary), &backup, FastOptions(), 64);
  ASSERT_TRUE(sender.ok()) << sender.status().ToString();
  backup.StartHeartbeats(50ms);
  ASSERT_NO_FATAL_FAILURE(CommitFirstEpoch(**sender, backup, mem));
  // The backup falls silent; the primary's peer timeout (300 ms) fails the
  // session.
  backup.StopHeartbeats();
  const auto until = std::chrono::steady_clock::now() + kBound;
  while ((*sender)->healthy() && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(10ms);
  ASSERT_FALSE((*sender)->healthy()) << "the session never failed";
  EXPECT_FALSE((*sender)->Stop(protocol::ByeReason::kHandover).ok());
  AbandonPromptly(std::move(*sender));
  for (int frames = 0;; ++frames) {
    ASSERT_LT(frames, 100000) << "no end in sight";
    auto f = backup.Next();
    if (!f.ok()) {
      // EOF, or a reset if the primary closed with our heartbeats unread:
      // either is a lost connection to the backup, never "alive".
      EXPECT_TRUE(f.status().code() == Code::kClosed || f.status().code() == Code::kIoError) << f.status().ToString();
      break;
    }
    ASSERT_NE(f->type(), FrameType::kError)
        << "a primary that handed over told its backup to expect a resync: " << protocol::DescribeErrorPayload(f->payload);
  }
}

// The same over TLS 1.3 (PSK): the half-close is a close_notify, and the
// primary keeps decrypting what the backup writes after it.
TEST(SenderLiveness, StalledBackupOverTlsReadsResyncAndEof) {
  transport::testing::TempDir dir;
  ASSERT_TRUE(transport::WritePskFile(dir.File("psk")).ok());
  auto sec = transport::testing::LoadOrDie(transport::testing::PskConfig(dir.File("psk")));
  auto c = transport::testing::ConnectPair(sec, sec);
  ASSERT_TRUE(c.client.ok() && c.server.ok());
  StallBetweenEpochsThenResume(TcpPair{std::move(*c.client), std::move(*c.server)});
}

// The backup's disk is full: it says ERROR resource and closes while the
// primary is mid-write. The primary's write fails (EPIPE or reset), but the
// reason it reports is the backup's, not "Broken pipe": an operator must
// see "resource: No space left", and the judge of a later session too.
TEST(SenderLiveness, AWriteFailureReportsTheBackupsLastWord) {
  const auto mem = RandomPages(8192, 3);  // 32 MiB: the write is under way when the backup closes
  for (int round = 0; round < 5; ++round) {
    auto pair = MakeTcpPair();
    ScriptedBackup backup(std::move(pair.backup));
    auto sender = StartSender(std::move(pair.primary), &backup, FastOptions(), 8192);
    ASSERT_TRUE(sender.ok()) << sender.status().ToString();
    auto sent = std::async(std::launch::async, [&] { return SendEpoch(**sender, 1, mem); });
    auto first = backup.Next();  // the primary is writing
    ASSERT_TRUE(first.ok()) << first.status().ToString();
    ASSERT_TRUE(backup.SendError(protocol::ErrorCode::kResource, "writing img.tmp: No space left on device").ok());
    backup.Close();
    ASSERT_EQ(sent.wait_for(kBound), std::future_status::ready);
    Status st = sent.get();
    ASSERT_FALSE(st.ok()) << "round " << round << ": the epoch went out to a closed backup";
    EXPECT_NE(st.message().find("resource: writing img.tmp: No space left"), std::string::npos)
        << "round " << round << ": " << st.ToString();
    AbandonPromptly(std::move(*sender));
  }
}

// A backup that cannot hold the guest at all (ERROR capabilities: a guest
// type it cannot resume) is a refusal, told as the backup's reason, not a
// "backup reported an error" Corruption of the stream.
TEST(SenderLiveness, ABackupThatCannotHoldTheGuestRefusesIt) {
  auto pair = MakeTcpPair();
  ScriptedBackup backup(std::move(pair.backup));
  const auto mem = RandomPages(64, 4);
  auto sender = StartSender(std::move(pair.primary), &backup, FastOptions(), 64);
  ASSERT_TRUE(sender.ok()) << sender.status().ToString();
  auto sent = std::async(std::launch::async, [&] { return SendEpoch(**sender, 1, mem); });
  auto first = backup.Next();
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  ASSERT_TRUE(backup.SendError(protocol::ErrorCode::kCapabilities,
                               "state record: the primary protects an HVM guest, which this backup cannot resume")
                  .ok());
  backup.Close();
  ASSERT_EQ(sent.wait_for(kBound), std::future_status::ready);
  (void)sent.get();  // the epoch may or may not have gone out whole before the close
  // The ERROR is the reader's first failure: what the session failed with.
  Status st = (*sender)->WaitAck(1, 5000ms);
  ASSERT_FALSE(st.ok());
  EXPECT_FALSE((*sender)->healthy());
  st = (*sender)->failure();
  EXPECT_EQ(st.code(), Code::kUnsupported) << st.ToString();
  EXPECT_NE(st.message().find("backup refused the guest: capabilities: state record: the primary protects an HVM"),
            std::string::npos)
      << st.ToString();
  AbandonPromptly(std::move(*sender));
}

TEST(SenderLiveness, BackupStalledMidFrameStillGetsWholeFramesThenResync) {
  auto pair = MakeTcpPair();
  ScriptedBackup backup(std::move(pair.backup));
  const uint64_t pages = 16384;  // 64 MiB of random pages: far beyond the socket buffers
  const auto mem = RandomPages(pages, 2);
  auto sender = StartSender(std::move(pair.primary), &backup, FastOptions(), pages);
  ASSERT_TRUE(sender.ok()) << sender.status().ToString();

  // Stalled right after the handshake: the first epoch's writes block, the
  // primary sees silence and must give up without waiting for the write.
  auto sent = std::async(std::launch::async, [&] { return SendEpoch(**sender, 1, mem); });
  ASSERT_EQ(sent.wait_for(kBound), std::future_status::ready) << "the epoch thread stayed stuck in a write";
  EXPECT_FALSE(sent.get().ok());
  AbandonPromptly(std::move(*sender));

  ExpectResyncThenEof(backup);
}

TEST(SenderLiveness, SlowButAliveBackupIsBackpressureNotDeath) {
  auto pair = MakeTcpPair();
  ScriptedBackup backup(std::move(pair.backup));
  const uint64_t pages = 12288;  // 48 MiB random: three flushes, beyond the socket buffers
  const auto mem = RandomPages(pages, 3);
  // A stall window on the first epoch too (as the Xen path sets one): every
  // write must still go on as long as it progresses.
  // One flush is 16 MiB, so a write judged by its total duration would fail
  // once the socket buffers are full; judged by progress (a 1 MiB frame
  // read every 100 ms, well inside the 800 ms window) it must not.
  auto opts = FastOptions();
  opts.outbuf_bytes = 16u << 20;
  opts.write_timeout = 800ms;
  opts.first_epoch_write_timeout = 800ms;
  auto sender = StartSender(std::move(pair.primary), &backup, opts, pages);
  ASSERT_TRUE(sender.ok()) << sender.status().ToString();
  backup.StartHeartbeats(50ms);

  auto read = std::async(std::launch::async, [&] { return backup.ReadEpoch(100ms); });
  auto t0 = std::chrono::steady_clock::now();
  Status sent = SendEpoch(**sender, 1, mem);
  ASSERT_TRUE(sent.ok()) << sent.ToString();
  auto digest = read.get();
  ASSERT_TRUE(digest.ok()) << digest.status().ToString();
  // The commit of the first epoch takes longer than any ack timeout.
  std::this_thread::sleep_for(1000ms);
  ASSERT_TRUE(backup.SendAck(1, *digest).ok());
  Status acked = (*sender)->WaitAck(1, replicator::CheckpointSender::kWhileAlive);
  ASSERT_TRUE(acked.ok()) << acked.ToString();
  std::printf("slow backup: first epoch acked after %.1f s\n",
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  EXPECT_TRUE((*sender)->healthy());
  EXPECT_TRUE((*sender)->Stop().ok());
}

TEST(SenderLiveness, WedgedReceiveLoopWithLiveHeartbeatsIsCaughtOnLaterEpochs) {
  auto pair = MakeTcpPair();
  ScriptedBackup backup(std::move(pair.backup));
  const auto mem = RandomPages(64, 4);
  auto sender = StartSender(std::move(pair.primary), &backup, FastOptions(), 64);
  ASSERT_TRUE(sender.ok()) << sender.status().ToString();
  backup.StartHeartbeats(50ms);
  ASSERT_TRUE(SendEpoch(**sender, 1, mem).ok());
  auto d1 = backup.ReadEpoch();
  ASSERT_TRUE(d1.ok());
  ASSERT_TRUE(backup.SendAck(1, *d1).ok());
  ASSERT_TRUE((*sender)->WaitAck(1, replicator::CheckpointSender::kWhileAlive).ok());
  // Epoch 2 is never read although heartbeats go on.
  ASSERT_TRUE(SendEpoch(**sender, 2, mem).ok());
  Status waited = (*sender)->WaitAck(2, 300ms);
  EXPECT_EQ(waited.code(), Code::kTimeout) << waited.ToString();
  EXPECT_FALSE((*sender)->healthy());
  backup.StopHeartbeats();
  AbandonPromptly(std::move(*sender));
  ExpectResyncThenEof(backup);
}

// ---- The same rules through EpochLoop (what `romulus replicate` runs) ----

// A static guest of random pages: the full sync is all wire bytes.
class RandomGuest : public replicator::GuestSource {
 public:
  explicit RandomGuest(uint64_t pages) : mem_(RandomPages(pages, 5)), all_(true) {}
  uint64_t guest_pages() const override { return mem_.size() / 4096; }
  std::string identity() const override { return "random-guest"; }
  Status Pause() override { return Status::Ok(); }
  Status HarvestDirty(std::vector<uint64_t>* pfns) override {
    pfns->clear();
    if (all_) {
      for (uint64_t p = 0; p < guest_pages(); ++p) pfns->push_back(p);
    }
    all_ = false;
    return Status::Ok();
  }
  const uint8_t* PageData(uint64_t pfn) override { return &mem_[pfn * 4096]; }
  Status CaptureState(std::vector<uint8_t>* state) override {
    state->assign(16, 7);
    return Status::Ok();
  }
  Status Resume() override { return Status::Ok(); }
  void MarkAllDirty() override { all_ = true; }

 private:
  std::vector<uint8_t> mem_;
  bool all_;
};

TEST(SenderLiveness, EpochLoopFullSyncWaitsForASlowLiveBackup) {
  RandomGuest guest(4096);  // 16 MiB
  auto pair = MakeTcpPair();
  ScriptedBackup backup(std::move(pair.backup));
  std::atomic<int> connects{0};
  std::atomic<bool> stop{false};
  auto primary = std::make_shared<std::unique_ptr<transport::Stream>>(std::move(pair.primary));
  replicator::ConnectFn connect = [&, primary]() -> Result<std::unique_ptr<transport::Stream>> {
    if (connects++ == 0) return std::move(*primary);
    stop = true;  // a second connection means the first session was given up
    return Status::Closed("test: no second backup");
  };
  // The backup: slow reads while heartbeating, then a first commit longer
  // than the ack timeout, then prompt acks.
  std::thread backup_thread([&] {
    if (!backup.Handshake().ok()) return;
    backup.StartHeartbeats(50ms);
    for (uint64_t epoch = 1; epoch <= 3; ++epoch) {
      auto d = backup.ReadEpoch(epoch == 1 ? 300ms : 0ms);
      if (!d.ok()) return;
      if (epoch == 1) std::this_thread::sleep_for(1000ms);
      if (!backup.SendAck(epoch, *d).ok()) return;
    }
    // Then the BYE of the clean stop.
    auto bye = backup.Next();
    (void)bye;
    backup.StopHeartbeats();
    backup.stream().Shutdown();
  });
  replicator::NoOutputCommit output;
  replicator::ControllerOptions lo;
  lo.interval = 20ms;
  lo.max_epochs = 3;
  lo.ack_timeout = 300ms;
  replicator::PrimaryController loop(replicator::MakeTimerDriver(guest), output, connect, FastOptions(), lo, nullptr);
  auto run = std::async(std::launch::async, [&] { return loop.Run(stop); });
  if (run.wait_for(kBound) != std::future_status::ready) {
    stop = true;
    run.wait();
    backup.stream().Shutdown();
    backup_thread.join();
    FAIL() << "the loop did not finish";
  }
  Status st = run.get();
  backup_thread.join();
  EXPECT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(connects.load(), 1) << "the full sync was abandoned and restarted";
  EXPECT_EQ(loop.last_acked_epoch(), 3);
}

// SIGTERM while the backup commits the full sync: the loop stops at once,
// and the session ends with BYE (no failover), not as a lost backup.
TEST(SenderLiveness, StopDuringTheFullSyncCommitEndsWithBye) {
  RandomGuest guest(256);
  auto pair = MakeTcpPair();
  ScriptedBackup backup(std::move(pair.backup));
  std::atomic<bool> stop{false};
  auto primary = std::make_shared<std::unique_ptr<transport::Stream>>(std::move(pair.primary));
  replicator::ConnectFn connect = [primary]() -> Result<std::unique_ptr<transport::Stream>> {
    if (!*primary) return Status::Closed("test: one connection only");
    return std::move(*primary);
  };
  std::promise<FrameType> after_epoch;  // what the backup reads after epoch 1: BYE expected
  std::thread backup_thread([&] {
    if (!backup.Handshake().ok()) return after_epoch.set_value(FrameType::kError);
    backup.StartHeartbeats(50ms);
    if (!backup.ReadEpoch().ok()) return after_epoch.set_value(FrameType::kError);
    // Committing for ever (never acks), heartbeats running; the primary's
    // heartbeats are skipped.
    auto f = backup.Next();
    while (f.ok() && f->type() == FrameType::kHeartbeat) f = backup.Next();
    after_epoch.set_value(f.ok() ? f->type() : FrameType::kError);
    backup.StopHeartbeats();
  });
  replicator::NoOutputCommit output;
  replicator::ControllerOptions lo;
  lo.interval = 20ms;
  lo.ack_timeout = 300ms;
  lo.phase_hook = [&](replicator::Phase p, uint64_t) {
    if (p == replicator::Phase::kBeforeCommit) stop = true;  // the operator's SIGTERM, right then
  };
  replicator::PrimaryController loop(replicator::MakeTimerDriver(guest), output, connect, FastOptions(), lo, nullptr);
  auto run = std::async(std::launch::async, [&] { return loop.Run(stop); });
  auto seen = after_epoch.get_future();
  ASSERT_EQ(run.wait_for(kBound), std::future_status::ready) << "stop was not honoured during the ack wait";
  EXPECT_TRUE(run.get().ok());
  ASSERT_EQ(seen.wait_for(kBound), std::future_status::ready);
  EXPECT_EQ(seen.get(), FrameType::kBye);
  backup.stream().Shutdown();
  backup_thread.join();
}

}  // namespace
}  // namespace romulus
