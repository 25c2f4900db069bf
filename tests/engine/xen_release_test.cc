// kCapXenRelease end to end in the engine: a real CheckpointSender offering
// its Xen release, a real CheckpointReceiver over a sink that restores with
// another release (docs/PROTOCOL.md §3.1; the mixed-version rule of
// docs/XEN-420.md). Xen itself cannot run here; the sink stands in for the
// Xen backup and says which release it restores with, which is all the
// receiver asks of it.
#include <gtest/gtest.h>

#include <thread>

#include "protocol/messages.h"
#include "replicator/checkpoint_sender.h"
#include "restore/checkpoint_receiver.h"
#include "tests/engine/memory_only_sink.h"
#include "tests/engine/stream_pair.h"

namespace romulus {
namespace {

using namespace std::chrono_literals;

// Stands in for the Xen backup: it restores with `release`.
class ReleaseSink : public test_engine::MemoryOnlySink {
 public:
  explicit ReleaseSink(uint32_t release) : release_(release) {}
  uint32_t xen_release() const override { return release_; }

 private:
  uint32_t release_;
};

replicator::SenderOptions Options() {
  replicator::SenderOptions o;
  o.codec.cache_pages = 64;
  o.outbuf_bytes = 8u << 20;
  o.heartbeat_interval = 50ms;
  o.peer_timeout = 5000ms;
  o.write_timeout = 5000ms;
  o.drain_timeout = 100ms;
  return o;
}

replicator::GuestInfo XenGuest(uint32_t release) {
  replicator::GuestInfo gi;
  gi.guest_pages = 64;
  gi.identity = "guest1";
  gi.capabilities = protocol::kCapXenStream;
  gi.xen_release = release;
  return gi;
}

struct Outcome {
  Status start;
  restore::SessionEnd end;
  bool began = false;
};

Outcome Handshake(uint32_t primary_release, uint32_t backup_release) {
  auto pair = test_engine::MakeStreamPair();
  restore::CheckpointReceiver receiver(restore::ReceiverOptions{});
  ReleaseSink sink(backup_release);
  Outcome out;
  std::thread backup([&] { out.end = receiver.Serve(*pair.backup, sink, nullptr); });
  auto sender = replicator::CheckpointSender::Start(std::move(pair.primary), Options(), XenGuest(primary_release));
  out.start = sender.status();
  if (sender.ok()) {
    (void)(*sender)->Stop();  // accepted: end the session; the test is the handshake
  }
  backup.join();
  out.began = sink.began.load();
  return out;
}

TEST(XenRelease, ABackupOnAnOlderXenRefusesAPrimaryOnANewerOne) {
  Outcome o = Handshake(protocol::XenRelease(4, 20), protocol::XenRelease(4, 17));
  EXPECT_EQ(o.start.code(), Code::kUnsupported) << o.start.ToString();
  EXPECT_NE(o.start.message().find("Xen 4.20"), std::string::npos) << o.start.message();
  EXPECT_NE(o.start.message().find("upgrade the backup"), std::string::npos) << o.start.message();
  // Refused before anything of the session touched the sink, and not a
  // session whose end could make the backup fail over.
  EXPECT_FALSE(o.began);
  EXPECT_FALSE(o.end.established);
}

TEST(XenRelease, SameOrOlderPrimaryReleaseIsAccepted) {
  for (uint32_t primary : {protocol::XenRelease(4, 17), protocol::XenRelease(4, 16)}) {
    SCOPED_TRACE(protocol::XenReleaseName(primary));
    Outcome o = Handshake(primary, protocol::XenRelease(4, 17));
    EXPECT_TRUE(o.start.ok()) << o.start.ToString();
    EXPECT_TRUE(o.began);
  }
}

TEST(XenRelease, APrimaryThatNamesNoReleaseIsAcceptedAsBefore) {
  // A primary built before kCapXenRelease (or a sim guest) names none.
  Outcome o = Handshake(0, protocol::XenRelease(4, 17));
  EXPECT_TRUE(o.start.ok()) << o.start.ToString();
  EXPECT_TRUE(o.began);
}

}  // namespace
}  // namespace romulus
