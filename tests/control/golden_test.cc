// Golden schemas of the control replies (docs/CONTROL.md): for every command
// and role, the reply's keys in order and the JSON type of each. The one
// PrimaryController answers for every guest type; it is checked with a
// simulated guest's driver and with a driver that has a Xen domain's facts
// against the SAME table, so `status` and every other answer have one
// schema whatever the guest type. Refusals (a command a role does
// not have) follow one rule with one wording.
#include <gtest/gtest.h>

#include <atomic>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "control/replies.h"
#include "control/reply.h"
#include "replicator/control.h"
#include "replicator/primary_controller.h"
#include "replicator/timer_driver.h"
#include "replicator/output_commit.h"
#include "restore/backup_control.h"
#include "sim/image_sink.h"
#include "sim/sim_guest.h"
#include "tests/engine/fake_driver.h"

namespace romulus {
namespace {

using namespace std::chrono_literals;
using control::Json;

// "s" string, "i" integer, "b" boolean, "o" object, "a" array, "n" null;
// "s|n": either.
using Schema = std::vector<std::pair<std::string, std::string>>;

std::string TypeOf(const Json& v) {
  if (v.is_string()) return "s";
  if (v.is_number_integer()) return "i";
  if (v.is_boolean()) return "b";
  if (v.is_object()) return "o";
  if (v.is_array()) return "a";
  if (v.is_null()) return "n";
  return "?";
}

// Checks a reply line against a schema: same keys, same order, allowed types.
void ExpectSchema(const std::string& line, const Schema& want, const std::string& what) {
  auto p = control::ParseReply(line);
  ASSERT_TRUE(p.ok()) << what << ": " << line;
  std::vector<std::string> keys, want_keys;
  for (const auto& [k, v] : p->body.items()) keys.push_back(k);
  for (const auto& [k, t] : want) want_keys.push_back(k);
  EXPECT_EQ(keys, want_keys) << what << ": " << line;
  for (const auto& [k, types] : want) {
    if (!p->body.contains(k)) continue;
    const std::string t = TypeOf(p->body[k]);
    EXPECT_NE(("|" + types + "|").find("|" + t + "|"), std::string::npos)
        << what << ": key " << k << " is of type " << t << ", want " << types << ": " << line;
  }
}

const Schema kError = {{"ok", "b"}, {"error", "s"}, {"usage", "b"}};

// The one table both primaries answer from.
const Schema kPrimaryStatus = {
    {"ok", "b"},          {"role", "s"},         {"guest", "s"},     {"epoch", "i"},
    {"last_acked", "i"},  {"last_ack_age_ms", "i"}, {"protection", "s"}, {"paused", "b"},
    {"output_commit", "s"}, {"interval_us", "i"}, {"interval", "s"},  {"cache_size", "i"},
    {"cache_size_next_session", "i"}, {"unprotected_reason", "s|n"}, {"backend", "s"},
    {"domain", "s|n"},    {"domid", "i|n"},    {"guest_type", "s|n"}, {"disks", "o|n"}};
const Schema kStats = {{"ok", "b"}, {"last", "o|n"}, {"totals", "o|n"}};
const Schema kSetInterval = {{"ok", "b"}, {"interval_us", "i"}, {"applies", "s"}};
const Schema kCacheLive = {{"ok", "b"}, {"cache_size", "i"}, {"cache_size_next_session", "i"}, {"applies", "s"}};
const Schema kCacheNextSession = {{"ok", "b"}, {"cache_size_next_session", "i"}, {"applies", "s"}, {"note", "s"}};
const Schema kPause = {{"ok", "b"}, {"paused", "b"}, {"warning", "s"}};
const Schema kResume = {{"ok", "b"}, {"paused", "b"}};
const Schema kHelp = {{"ok", "b"}, {"role", "s"}, {"commands", "a"}};
const Schema kSwitchover = {{"ok", "b"}, {"final_epoch", "i"}, {"guest", "s"}};
const Schema kDigest = {{"ok", "b"}, {"epoch", "i"}, {"digest", "s"}, {"guest_pages", "i"}, {"regions", "a"}};

// One row per primary command whose answer does not depend on a backup.
struct Row {
  std::vector<std::string> words;
  const Schema* schema;
};
const std::vector<Row>& PrimaryTable() {
  static const std::vector<Row> rows = {
      {{"status"}, &kPrimaryStatus},        {{"stats"}, &kStats},   {{"set", "interval", "50ms"}, &kSetInterval},
      {{"pause"}, &kPause},                 {{"status"}, &kPrimaryStatus}, {{"resume"}, &kResume},
      {{"help"}, &kHelp},                   {{"failover"}, &kError}, {{"set", "reverse-to", "h:1"}, &kError},
      {{"set", "interval", "1ms"}, &kError}, {{"frobnicate"}, &kError},
  };
  return rows;
}

std::string Call(const replicator::ControlHandler& h, std::vector<std::string> w) {
  return replicator::RenderControlReply(replicator::HandleWords(h, w));
}

sim::SimSpec SmallSpec() {
  sim::SimSpec spec;
  spec.size_bytes = 4 << 20;
  spec.workload = sim::Workload::kHotset;
  spec.rate = sim::DefaultRate(spec.workload);
  return spec;
}

// A primary with no backup (every connection refused), over `driver`.
struct Primary {
  explicit Primary(std::unique_ptr<replicator::CheckpointDriver> driver) {
    replicator::SenderOptions sopt;
    sopt.codec.cache_pages = 1024;
    replicator::ControllerOptions lopt;
    lopt.interval = 100ms;
    loop = std::make_unique<replicator::PrimaryController>(
        std::move(driver), output, [] { return Result<std::unique_ptr<transport::Stream>>(Status::Closed("none")); },
        sopt, lopt, nullptr);
    handler = replicator::PrimaryControlHandler(loop.get());
  }
  replicator::NoOutputCommit output;
  std::unique_ptr<replicator::PrimaryController> loop;
  replicator::ControlHandler handler;
};

struct SimPrimary : Primary {
  SimPrimary() : SimPrimary(std::move(*sim::SimGuest::Create(SmallSpec()))) {}
  explicit SimPrimary(std::unique_ptr<sim::SimGuest> g)
      : Primary(replicator::MakeTimerDriver(*g)), guest(std::move(g)) {}
  std::unique_ptr<sim::SimGuest> guest;
};

struct XenPrimary : Primary {
  XenPrimary() : Primary(std::make_unique<testing::FakeDriver>(testing::FakeDriver::XenLike())) {}
};

TEST(GoldenPrimary, SimulatedGuestAnswersTheTable) {
  SimPrimary p;
  for (const Row& row : PrimaryTable()) ExpectSchema(Call(p.handler, row.words), *row.schema, "sim " + row.words[0]);
  // No backup: the new size waits for the next session.
  ExpectSchema(Call(p.handler, {"set", "cache-size", "8M"}), kCacheNextSession, "sim set cache-size");
  // digest blocks until epoch N is acked, so it needs a running pair: its
  // answer is written by control::ToJson(DigestAnswer) (SharedWritersHaveTheTableSchemas)
  // and checked end to end in tests/engine/control_test.cc.
  auto st = control::ParseReply(Call(p.handler, {"status"}));
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->body["backend"], "sim");
  EXPECT_TRUE(st->body["domain"].is_null());
  EXPECT_TRUE(st->body["domid"].is_null());
  EXPECT_TRUE(st->body["guest_type"].is_null());
}

TEST(GoldenPrimary, XenDomainAnswersTheSameTable) {
  XenPrimary p;
  for (const Row& row : PrimaryTable()) ExpectSchema(Call(p.handler, row.words), *row.schema, "xen " + row.words[0]);
  ExpectSchema(Call(p.handler, {"set", "cache-size", "8M"}), kCacheNextSession, "xen set cache-size");
  auto st = control::ParseReply(Call(p.handler, {"status"}));
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->body["backend"], "xen");
  EXPECT_EQ(st->body["domain"], "fake-domain");
  EXPECT_EQ(st->body["domid"], 7);
  EXPECT_EQ(st->body["guest_type"], "pvh");
  // Not PROTECTED: refused at once, with the same words as for a simulated guest.
  auto sim_so = control::ParseReply(Call(SimPrimary().handler, {"switchover"}));
  auto xen_so = control::ParseReply(Call(p.handler, {"switchover"}));
  ASSERT_TRUE(sim_so.ok() && xen_so.ok());
  EXPECT_FALSE(xen_so->ok);
  EXPECT_EQ(sim_so->error, xen_so->error);
}

TEST(GoldenPrimary, StatusKeysAreIdenticalForBothGuestTypes) {
  SimPrimary sim;
  XenPrimary xen;
  for (const auto& words : {std::vector<std::string>{"status"}, {"stats"}, {"help"}, {"pause"}, {"resume"}}) {
    auto a = control::ParseReply(Call(sim.handler, words));
    auto b = control::ParseReply(Call(xen.handler, words));
    ASSERT_TRUE(a.ok() && b.ok());
    std::vector<std::string> ka, kb;
    for (const auto& [k, v] : a->body.items()) ka.push_back(k);
    for (const auto& [k, v] : b->body.items()) kb.push_back(k);
    EXPECT_EQ(ka, kb) << words[0];
    if (words[0] == "help") {
      EXPECT_EQ(a->body["commands"], b->body["commands"]);
    }
  }
}

// The switchover answer's schema for a simulated guest comes from the same
// writer; its running-loop behaviour is tested in tests/engine/control_test.cc.
TEST(GoldenPrimary, SharedWritersHaveTheTableSchemas) {
  ExpectSchema(control::Render(control::Reply::Ok(control::SwitchoverJson(5, "x"))), kSwitchover, "switchover");
  ExpectSchema(control::Render(control::Reply::Ok(control::ToJson(control::DigestAnswer{3, 9, 10, {1, 2}}))),
               kDigest, "digest");
  ExpectSchema(control::Render(control::Reply::Ok(control::CacheSizeLiveJson(4096))), kCacheLive, "cache live");
}

// Refusals: one rule, one wording, usage:false (exit 1), for every role.
TEST(GoldenRefusal, OneRuleOneWording) {
  struct Case {
    control::Role role;
    std::vector<std::string> words;
    std::string starts;
  };
  const std::vector<Case> cases = {
      {control::Role::kPrimary, {"failover"}, "'failover' is not a command of this primary: failover is the backup's"},
      {control::Role::kPrimary, {"set", "reverse-to", "h:1"}, "'set reverse-to' is not a command of this primary:"},
      {control::Role::kBackup, {"pause"}, "'pause' is not a command of this backup: it is a primary command"},
      {control::Role::kBackup, {"set", "interval", "1s"}, "'set interval' is not a command of this backup:"},
      {control::Role::kXenBackup, {"switchover"}, "'switchover' is not a command of this Xen backup:"},
  };
  for (const Case& c : cases) {
    auto h = replicator::ForRole(c.role, [](const control::Request&) { return control::Reply::Ok(); });
    const std::string line = Call(h, c.words);
    ExpectSchema(line, kError, c.words[0]);
    auto p = control::ParseReply(line);
    ASSERT_TRUE(p.ok());
    EXPECT_FALSE(p->usage) << line;
    EXPECT_EQ(p->error.rfind(c.starts, 0), 0u) << line;
  }
}

// The backup's commands and answers.
TEST(GoldenBackup, CommandsAndTheirSchemas) {
  sim::ImageSinkOptions so;
  so.run_activated = false;
  auto sink = sim::ImageSink::Open(so);
  ASSERT_TRUE(sink.ok()) << sink.status().ToString();
  restore::BackupControl control(
      sink->get(), [](uint64_t e, uint32_t) { return Result<control::DigestAnswer>(control::DigestAnswer{e, 0, 1, {0}}); },
      [](const std::string& t) { return t == "bad" ? Status::InvalidArgument("needs HOST:PORT") : Status::Ok(); },
      nullptr);
  auto h = control.Handler();
  const Schema status = {{"ok", "b"},       {"role", "s"},     {"state", "s"},         {"epoch", "i"},
                         {"committed_epoch", "i"}, {"digest", "s"}, {"protection", "s"}, {"primary", "s"},
                         {"failover", "b"}, {"decision", "s"}, {"decision_reason", "s"}, {"sessions", "i"},
                         {"strays", "i"},   {"output_commit", "s"}};
  ExpectSchema(Call(h, {"status"}), status, "backup status");
  ExpectSchema(Call(h, {"set", "reverse-to", "old:7000"}), {{"ok", "b"}, {"reverse_to", "s"}}, "reverse-to");
  Schema with_reverse = status;
  with_reverse.insert(with_reverse.end() - 1, {"reverse_to", "s"});
  ExpectSchema(Call(h, {"status"}), with_reverse, "backup status with reverse_to");
  ExpectSchema(Call(h, {"set", "reverse-to", "bad"}), kError, "bad reverse-to");
  ExpectSchema(Call(h, {"failover"}), kError, "failover with nothing committed");
  ExpectSchema(Call(h, {"help"}), kHelp, "backup help");
  auto help = control::ParseReply(Call(h, {"help"}));
  ASSERT_TRUE(help.ok());
  EXPECT_EQ(help->body["commands"].size(), 6u) << help->body.dump();
  for (std::vector<std::string> w : {std::vector<std::string>{"stats"}, {"pause"}, {"switchover"}}) {
    ExpectSchema(Call(h, w), kError, "backup " + w[0]);
  }
  // digest: answered at the commit of its epoch (played here by OnCommit,
  // repeated until the waiting request has registered).
  std::string digest;
  std::atomic<bool> answered{false};
  std::thread asker([&] {
    digest = Call(h, {"digest", "3", "1"});
    answered = true;
  });
  std::thread committer([&] {
    for (int i = 0; i < 20000 && !answered; ++i) {
      restore::CommitEvent e;
      e.epoch = 3;
      control.OnCommit(e);
      std::this_thread::sleep_for(1ms);
    }
  });
  asker.join();
  committer.join();
  ExpectSchema(digest, kDigest, "backup digest");
}

// A Xen backup (no region digest function: libxenguest holds the memory)
// answers `digest N 1` with the epoch's stream digest from the commit of N,
// in the same schema, and refuses more regions clearly.
TEST(GoldenBackup, XenBackupAnswersTheStreamDigestAsOneRegion) {
  sim::ImageSinkOptions so;
  so.run_activated = false;
  auto sink = sim::ImageSink::Open(so);
  ASSERT_TRUE(sink.ok()) << sink.status().ToString();
  restore::BackupControl control(sink->get(), nullptr, nullptr, nullptr);  // restore --xen
  auto h = control.Handler();
  auto ask = [&](std::vector<std::string> words) {
    std::string reply;
    std::atomic<bool> answered{false};
    std::thread asker([&] {
      reply = Call(h, words);
      answered = true;
    });
    for (int i = 0; i < 20000 && !answered; ++i) {
      restore::CommitEvent e;
      e.epoch = 3;
      e.digest = 0x1234abcd;
      e.guest_pages = 4096;
      control.OnCommit(e);
      std::this_thread::sleep_for(1ms);
    }
    asker.join();
    return reply;
  };
  const std::string one = ask({"digest", "3", "1"});
  ExpectSchema(one, kDigest, "xen backup digest");
  auto p = control::ParseReply(one);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->body["digest"], "000000001234abcd") << one;
  EXPECT_EQ(p->body["regions"], Json::array({"000000001234abcd"})) << one;
  EXPECT_EQ(p->body["guest_pages"], 4096) << one;
  const std::string many = ask({"digest", "3", "16"});
  ExpectSchema(many, kError, "xen backup digest of 16 regions");
  EXPECT_NE(many.find("ask for 1 region"), std::string::npos) << many;
}

}  // namespace
}  // namespace romulus
