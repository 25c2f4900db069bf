// `romulus ctl`'s rendering for people (control/human.h): status of either
// primary and of a backup as aligned lines with the facts an operator asks
// for first, one "ok: ..." line for the rest, nothing an answer carries hidden.
#include "control/human.h"

#include <gtest/gtest.h>

#include "control/replies.h"

namespace romulus::control {
namespace {

using namespace std::chrono_literals;

Json Answer(Json members) {
  Json j = Json::object();
  j["ok"] = true;
  for (const auto& [k, v] : members.items()) j[k] = v;
  return j;
}

bool Has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

TEST(CtlHuman, PrimaryStatusSaysWhatMatters) {
  PrimaryStatus s;
  s.guest = "sim:size=16M";
  s.epoch = 42;
  s.last_acked = 41;
  s.last_ack_age = 12ms;
  s.protected_now = true;
  s.output_commit = "none (output not committed)";
  s.interval = 100ms;
  s.cache_size = 64ull << 20;
  s.cache_size_next_session = 128ull << 20;
  std::string t = RenderHuman(StatusReq{}, Answer(ToJson(s)));
  EXPECT_TRUE(Has(t, "role:          primary (sim)\n")) << t;
  EXPECT_TRUE(Has(t, "guest:         sim:size=16M\n")) << t;
  EXPECT_TRUE(Has(t, "protection:    PROTECTED\n")) << t;
  EXPECT_TRUE(Has(t, "last acked:    epoch 41 (12 ms ago)\n")) << t;
  EXPECT_TRUE(Has(t, "interval:      100 ms\n")) << t;
  EXPECT_TRUE(Has(t, "output commit: none (output not committed)\n")) << t;
  EXPECT_TRUE(Has(t, "cache:         64 MiB (next session: 128 MiB)\n")) << t;
  EXPECT_FALSE(Has(t, "{")) << "no JSON for people: " << t;
  EXPECT_FALSE(Has(t, "disks:")) << "a guest without disks shows none: " << t;
  s.disks = PrimaryStatus::Disks{375, 0, 1};
  t = RenderHuman(StatusReq{}, Answer(ToJson(s)));
  EXPECT_TRUE(Has(t, "disks:         being copied: 37% (this session: 1 copied whole, 0 changed region(s) resynced)\n"))
      << t;
  s.disks = PrimaryStatus::Disks{1000, 12, 0};
  t = RenderHuman(StatusReq{}, Answer(ToJson(s)));
  EXPECT_TRUE(Has(t, "disks:         copied to the backup (this session: 0 copied whole, 12 changed region(s) resynced)\n"))
      << t;
  s.disks.reset();

  s.protected_now = false;
  s.last_acked = -1;
  s.unprotected_reason = "backup lost: Timeout: no ack";
  s.backend = "xen";
  s.domain = "guest1";
  s.domid = 7;
  s.cache_size_next_session = s.cache_size;
  t = RenderHuman(StatusReq{}, Answer(ToJson(s)));
  EXPECT_TRUE(Has(t, "primary (Xen domain guest1, domid 7)")) << t;
  EXPECT_TRUE(Has(t, "UNPROTECTED (backup lost: Timeout: no ack)")) << t;
  EXPECT_TRUE(Has(t, "last acked:    none yet")) << t;
  EXPECT_TRUE(Has(t, "cache:         64 MiB\n")) << t;

  // Paused a moment ago, the epoch in flight still acked: no contradiction shown.
  s.protected_now = true;
  s.paused = true;
  s.unprotected_reason = "checkpointing paused by the operator (until resume)";
  t = RenderHuman(StatusReq{}, Answer(ToJson(s)));
  EXPECT_TRUE(Has(t, "protection:    PROTECTED\n")) << t;
  EXPECT_TRUE(Has(t, "paused:        yes")) << t;
  s.paused = false;
  s.protected_now = false;

  // A reverse primary's extras are shown, not dropped.
  Json j = Answer(ToJson(s));
  j["replicating_to"] = "old:7000";
  EXPECT_TRUE(Has(RenderHuman(StatusReq{}, j), "replicating_to")) << RenderHuman(StatusReq{}, j);
}

TEST(CtlHuman, BackupStatusSaysDecisionAndWhy) {
  BackupStatus b;
  b.state = "holding";
  b.committed_epoch = 17;
  b.digest = 0xabc;
  b.decision = "hold";
  b.decision_reason = "the fence did not confirm";
  b.sessions = 2;
  b.strays = 1;
  b.reverse_to = "old:7000";
  std::string t = RenderHuman(StatusReq{}, Answer(ToJson(b)));
  EXPECT_TRUE(Has(t, "role:            backup\n")) << t;
  EXPECT_TRUE(Has(t, "decision:        hold (the fence did not confirm)\n")) << t;
  EXPECT_TRUE(Has(t, "committed epoch: 17 (digest ")) << t;
  EXPECT_TRUE(Has(t, "sessions:        2 (1 stray connections dropped)\n")) << t;
  EXPECT_TRUE(Has(t, "reverse to:      old:7000\n")) << t;
  EXPECT_TRUE(Has(t, "primary:         none connected\n")) << t;
}

TEST(CtlHuman, OtherCommandsAreOneOkLine) {
  EXPECT_EQ(RenderHuman(SetIntervalReq{}, Answer(IntervalSetJson(50ms))), "ok: interval 50 ms from the next epoch\n");
  EXPECT_EQ(RenderHuman(SetCacheSizeReq{}, Answer(CacheSizeLiveJson(8 << 20))), "ok: cache 8 MiB from the next epoch\n");
  EXPECT_TRUE(Has(RenderHuman(SetCacheSizeReq{}, Answer(CacheSizeNextSessionJson(8 << 20))), "next session"));
  EXPECT_EQ(RenderHuman(PauseReq{}, Answer(PausedJson(true))),
            "ok: paused: the guest runs UNPROTECTED until resume\n");
  EXPECT_EQ(RenderHuman(ResumeReq{}, Answer(PausedJson(false))), "ok: resumed: checkpointing again\n");
  EXPECT_EQ(RenderHuman(FailoverReq{}, Answer(FailoverJson(9))), "ok: activated from epoch 9\n");
  EXPECT_EQ(RenderHuman(SetReverseToReq{}, Answer(ReverseToJson(""))), "ok: no reverse replication after activation\n");
  EXPECT_TRUE(Has(RenderHuman(SwitchoverReq{}, Answer(SwitchoverJson(12, "paused here"))), "final epoch 12"));
  std::string d = RenderHuman(DigestReq{}, Answer(ToJson(DigestAnswer{5, 1, 100, {1, 2}})));
  EXPECT_TRUE(Has(d, "ok: epoch 5 digest ")) << d;
  EXPECT_TRUE(Has(d, "  region 1: ")) << d;
  std::string stats = RenderHuman(StatsReq{}, Answer(Json{{"last", nullptr}, {"totals", nullptr}}));
  EXPECT_TRUE(Has(stats, "last epoch: none yet")) << stats;
}

}  // namespace
}  // namespace romulus::control
