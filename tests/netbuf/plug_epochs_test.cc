// The boundary rule of PlugEpochs (see netbuf/plug_epochs.h), modelled against
// a tiny simulation of sch_plug's counters (the kernel's plug_enqueue /
// plug_dequeue / plug_change): whatever the order of checkpoints and acks, a
// packet is never released before the epoch it belongs to is acked, and it is
// released at the latest one boundary later.
#include "netbuf/plug_epochs.h"

#include <gtest/gtest.h>

#include <deque>
#include <random>
#include <vector>

namespace romulus::netbuf {
namespace {

// sch_plug, as in net/sched/sch_plug.c.
struct FakePlug {
  std::deque<uint64_t> q;  // each packet carries the epoch it belongs to
  uint64_t current = 0, last = 0, to_release = 0;
  bool throttled = true, indefinite = false;
  std::vector<uint64_t> out;

  void Enqueue(uint64_t epoch) {
    if (!indefinite) ++current;
    q.push_back(epoch);
  }
  void Drain() {
    while (!throttled && !q.empty()) {
      if (!indefinite) {
        if (to_release == 0) {
          throttled = true;
          break;
        }
        --to_release;
      }
      out.push_back(q.front());
      q.pop_front();
    }
  }
  void Apply(PlugAction a) {
    switch (a) {
      case PlugAction::kBuffer:
        last = current;
        current = 0;
        if (indefinite) throttled = true;
        indefinite = false;
        break;
      case PlugAction::kReleaseOne:
        to_release += last;
        last = 0;
        throttled = false;
        break;
      case PlugAction::kReleaseIndefinite:
        indefinite = true;
        to_release = last = current = 0;
        throttled = false;
        break;
      case PlugAction::kNone: break;
    }
    Drain();
  }
};

TEST(PlugEpochsTest, OneOutstandingBoundaryIsExact) {
  PlugEpochs e;
  FakePlug k;
  for (uint64_t n = 1; n <= 5; ++n) {
    k.Enqueue(n);  // output of epoch n, produced before its suspend
    k.Enqueue(n);
    auto c = e.OnCheckpoint(n);
    ASSERT_TRUE(c.ok());
    EXPECT_EQ(*c, PlugAction::kBuffer);
    k.Apply(*c);
    e.CommitCheckpoint(n, *c);
    EXPECT_EQ(k.out.size(), 2 * (n - 1)) << "nothing of epoch " << n << " before its ack";
    auto r = e.OnRelease(n);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(*r, PlugAction::kReleaseOne);
    k.Apply(*r);
    e.CommitRelease(*r);
    EXPECT_EQ(k.out.size(), 2 * n) << "all of epoch " << n << " after its ack";
  }
  EXPECT_EQ(e.coalesced(), 0u);
}

TEST(PlugEpochsTest, RejectsNonMonotonicAndUnknownEpochs) {
  PlugEpochs e;
  EXPECT_FALSE(e.OnRelease(1).ok());
  e.CommitCheckpoint(3, *e.OnCheckpoint(3));
  EXPECT_FALSE(e.OnCheckpoint(3).ok());
  EXPECT_FALSE(e.OnCheckpoint(2).ok());
  EXPECT_FALSE(e.OnRelease(4).ok());
  auto r = e.OnRelease(2);  // an ack older than the boundary: nothing to do
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, PlugAction::kNone);
}

TEST(PlugEpochsTest, ReleaseAllThenCheckpointPlugsAgain) {
  PlugEpochs e;
  FakePlug k;
  k.Enqueue(1);
  auto c = *e.OnCheckpoint(1);
  k.Apply(c);
  e.CommitCheckpoint(1, c);
  k.Enqueue(2);
  k.Apply(PlugAction::kReleaseIndefinite);
  e.CommitReleaseAll();
  EXPECT_EQ(k.out.size(), 2u);
  k.Enqueue(2);  // unbuffered
  EXPECT_EQ(*e.OnRelease(1), PlugAction::kNone);
  k.Drain();
  EXPECT_EQ(k.out.size(), 3u);
  c = *e.OnCheckpoint(2);
  EXPECT_EQ(c, PlugAction::kBuffer);
  k.Apply(c);
  e.CommitCheckpoint(2, c);
  k.Enqueue(3);
  k.Drain();
  EXPECT_EQ(k.out.size(), 3u) << "plugged again after a checkpoint";
}

// Random interleavings of suspends, guest output and (possibly late, possibly
// coalesced) acks: safety (never early) and liveness (everything acked leaves
// once a later boundary is acked).
TEST(PlugEpochsTest, RandomScheduleNeverReleasesEarly) {
  std::mt19937_64 rng(42);
  for (int round = 0; round < 200; ++round) {
    PlugEpochs e;
    FakePlug k;
    // Half the rounds start as PlugQdisc does: released until the first
    // checkpoint (output before it, tagged 1, may leave at once).
    const bool passthrough = round % 2 == 1;
    if (passthrough) {
      k.Apply(PlugAction::kReleaseIndefinite);
      e.CommitReleaseAll();
    }
    uint64_t epoch = 1;  // the running epoch: its output is tagged with it
    uint64_t checkpointed = 0, acked = 0;
    for (int step = 0; step < 300; ++step) {
      int what = static_cast<int>(rng() % 10);
      if (what < 5) {
        k.Enqueue(epoch);
        k.Drain();
      } else if (what < 7 && checkpointed < epoch) {
        auto c = e.OnCheckpoint(epoch);
        ASSERT_TRUE(c.ok());
        k.Apply(*c);
        e.CommitCheckpoint(epoch, *c);
        checkpointed = epoch++;
      } else if (acked < checkpointed) {
        // Acks arrive in order, sometimes several at once (coalesced).
        acked += 1 + rng() % (checkpointed - acked);
        auto r = e.OnRelease(acked);
        ASSERT_TRUE(r.ok());
        k.Apply(*r);
        e.CommitRelease(*r);
      }
      for (uint64_t tag : k.out) {
        if (passthrough && tag == 1) continue;
        ASSERT_LE(tag, acked) << "released before its ack";
      }
    }
    // Quiesce: checkpoint and ack twice more; everything produced before must be out.
    uint64_t produced_before = epoch - 1;
    for (int i = 0; i < 2; ++i) {
      auto c = *e.OnCheckpoint(epoch);
      k.Apply(c);
      e.CommitCheckpoint(epoch, c);
      checkpointed = epoch++;
      auto r = *e.OnRelease(checkpointed);
      k.Apply(r);
      e.CommitRelease(r);
      acked = checkpointed;
    }
    for (uint64_t tag : k.q) ASSERT_GT(tag, produced_before) << "stranded packet";
    // Order is preserved (FIFO) by construction of the queue; the tags are nondecreasing.
    for (size_t i = 1; i < k.out.size(); ++i) ASSERT_LE(k.out[i - 1], k.out[i]);
  }
}

}  // namespace
}  // namespace romulus::netbuf
