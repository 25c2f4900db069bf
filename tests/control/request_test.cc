// The control requests (control/request.h): every command parses into its
// typed request, every usage mistake gives its one message, and hostile
// lines (huge numbers, empty words, 10 KB, bytes outside ASCII) are usage
// errors, never a crash or an allocation beyond the line itself.
#include "control/request.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "control/reply.h"

namespace romulus::control {
namespace {

using namespace std::chrono_literals;

Request Parsed(const std::string& line) {
  auto r = ParseRequestLine(line);
  EXPECT_TRUE(r.ok()) << line << ": " << r.status().ToString();
  return r.ok() ? *r : Request(HelpReq{});
}

std::string UsageOf(const std::string& line) {
  auto r = ParseRequestLine(line);
  EXPECT_FALSE(r.ok()) << line;
  if (r.ok()) return "";
  EXPECT_EQ(r.status().code(), Code::kInvalidArgument) << line;
  return r.status().message();
}

TEST(ControlRequest, EveryCommandParsesToItsType) {
  EXPECT_TRUE(std::holds_alternative<StatusReq>(Parsed("status")));
  EXPECT_TRUE(std::holds_alternative<StatsReq>(Parsed("stats\n")));
  EXPECT_TRUE(std::holds_alternative<PauseReq>(Parsed("pause\r\n")));
  EXPECT_TRUE(std::holds_alternative<ResumeReq>(Parsed("  resume  ")));
  EXPECT_TRUE(std::holds_alternative<FailoverReq>(Parsed("failover")));
  EXPECT_TRUE(std::holds_alternative<SwitchoverReq>(Parsed("switchover")));
  EXPECT_TRUE(std::holds_alternative<HelpReq>(Parsed("help")));

  auto iv = std::get<SetIntervalReq>(Parsed("set  interval\t50ms"));
  EXPECT_EQ(iv.interval, 50ms);
  EXPECT_EQ(std::get<SetIntervalReq>(Parsed("set interval 5ms")).interval, 5ms);
  EXPECT_EQ(std::get<SetIntervalReq>(Parsed("set interval 60s")).interval, 60s);

  EXPECT_EQ(std::get<SetCacheSizeReq>(Parsed("set cache-size 128M")).bytes, 128ull << 20);
  EXPECT_EQ(std::get<SetCacheSizeReq>(Parsed("set cache-size 0")).bytes, 0u) << "0 disables the cache";
  EXPECT_EQ(std::get<SetCacheSizeReq>(Parsed("set cache-size 64G")).bytes, 64ull << 30);

  auto d = std::get<DigestReq>(Parsed("digest 7"));
  EXPECT_EQ(d.epoch, 7u);
  EXPECT_EQ(d.regions, kDefaultDigestRegions);
  d = std::get<DigestReq>(Parsed("digest 9 4096"));
  EXPECT_EQ(d.epoch, 9u);
  EXPECT_EQ(d.regions, 4096u);

  EXPECT_EQ(std::get<SetReverseToReq>(Parsed("set reverse-to old:7000")).target, "old:7000");
  EXPECT_EQ(std::get<SetReverseToReq>(Parsed("set reverse-to none")).target, "") << "none clears it";
}

TEST(ControlRequest, NamesAreTheCommandsAsTyped) {
  EXPECT_EQ(CommandName(Parsed("set interval 1s")), "set interval");
  EXPECT_EQ(CommandName(Parsed("set cache-size 4K")), "set cache-size");
  EXPECT_EQ(CommandName(Parsed("set reverse-to none")), "set reverse-to");
  EXPECT_EQ(CommandName(Parsed("digest 1")), "digest");
  EXPECT_EQ(CommandName(Parsed("status")), "status");
}

// One message per mistake.
TEST(ControlRequest, EveryUsageMistakeHasItsMessage) {
  const std::string kSet = "usage: set interval DURATION | set cache-size SIZE | set reverse-to HOST:PORT|none";
  const std::string kDigest = "usage: digest EPOCH [REGIONS 1..4096]";
  EXPECT_EQ(UsageOf("status now"), "'status' takes no argument");
  EXPECT_EQ(UsageOf("stats 1"), "'stats' takes no argument");
  EXPECT_EQ(UsageOf("pause please"), "'pause' takes no argument");
  EXPECT_EQ(UsageOf("resume x"), "'resume' takes no argument");
  EXPECT_EQ(UsageOf("failover now"), "'failover' takes no argument");
  EXPECT_EQ(UsageOf("switchover x"), "'switchover' takes no argument");
  EXPECT_EQ(UsageOf("help me"), "'help' takes no argument");

  EXPECT_EQ(UsageOf("set"), kSet);
  EXPECT_EQ(UsageOf("set interval"), kSet);
  EXPECT_EQ(UsageOf("set colour red"), kSet);
  EXPECT_EQ(UsageOf("set interval 1s 2s"), kSet);
  EXPECT_EQ(UsageOf("set interval 4ms"), "set interval: must be between 5ms and 60s");
  EXPECT_EQ(UsageOf("set interval 61s"), "set interval: must be between 5ms and 60s");
  EXPECT_EQ(UsageOf("set interval soon").rfind("set interval: ", 0), 0u);
  EXPECT_EQ(UsageOf("set cache-size 4097"), "set cache-size: must be a multiple of 4K, at most 64G");
  EXPECT_EQ(UsageOf("set cache-size 65G"), "set cache-size: must be a multiple of 4K, at most 64G");
  EXPECT_EQ(UsageOf("set cache-size lots").rfind("set cache-size: ", 0), 0u);

  EXPECT_EQ(UsageOf("digest"), kDigest);
  EXPECT_EQ(UsageOf("digest 0"), kDigest);
  EXPECT_EQ(UsageOf("digest -1"), kDigest);
  EXPECT_EQ(UsageOf("digest x"), kDigest);
  EXPECT_EQ(UsageOf("digest 5 0"), kDigest);
  EXPECT_EQ(UsageOf("digest 5 4097"), kDigest);
  EXPECT_EQ(UsageOf("digest 5 16 1"), kDigest);

  EXPECT_EQ(UsageOf("frobnicate").rfind("unknown command 'frobnicate' (status, stats,", 0), 0u);
  EXPECT_EQ(UsageOf(""), "empty request");
  EXPECT_EQ(UsageOf("   \n"), "empty request");
  EXPECT_EQ(UsageOf("a b c d e f g h i"), "too many words in the request");
  EXPECT_EQ(UsageOf(std::string("sta\x01tus")), "request has a non-printable byte");
  EXPECT_EQ(UsageOf(std::string("st\xc3\xa9")), "request has a non-printable byte");
}

TEST(ControlRequest, WaitTakesAnEventAndOptionallyASeqAndADeadline) {
  auto w = std::get<WaitReq>(Parsed("wait protected"));
  EXPECT_EQ(w.event, "protected");
  EXPECT_EQ(w.after, 0u);
  EXPECT_EQ(w.within, kDefaultWaitWithin);
  w = std::get<WaitReq>(Parsed("wait session_start after 12 within 5s"));
  EXPECT_EQ(w.event, "session_start");
  EXPECT_EQ(w.after, 12u);
  EXPECT_EQ(w.within, 5000ms);
  w = std::get<WaitReq>(Parsed("wait failover within 60m after 3"));
  EXPECT_EQ(w.after, 3u);
  EXPECT_EQ(w.within, kMaxWaitWithin);
  EXPECT_EQ(CommandName(w), "wait");
  const std::string kWait = "usage: wait EVENT [after SEQ] [within DURATION] (EVENT: docs/EVENTS.md)";
  EXPECT_EQ(UsageOf("wait"), kWait);
  EXPECT_EQ(UsageOf("wait Protected"), kWait);
  EXPECT_EQ(UsageOf("wait a-b"), kWait);
  EXPECT_EQ(UsageOf("wait " + std::string(33, 'x')), kWait);
  EXPECT_EQ(UsageOf("wait protected after"), kWait);
  EXPECT_EQ(UsageOf("wait protected before 3"), kWait);
  EXPECT_EQ(UsageOf("wait protected after 1 after 2"), kWait);
  EXPECT_EQ(UsageOf("wait protected after -1").rfind("wait: after: not a sequence number", 0), 0u);
  EXPECT_EQ(UsageOf("wait protected after 99999999999999999999").rfind("wait: after:", 0), 0u);
  EXPECT_EQ(UsageOf("wait protected within 61m"), "wait: within: must be between 1ms and 60m");
  EXPECT_EQ(UsageOf("wait protected within soon").rfind("wait: within: ", 0), 0u);
}

TEST(ControlRequest, HostileInputIsAUsageErrorNeverACrash) {
  // Numbers far beyond 64 bits.
  EXPECT_EQ(UsageOf("digest 99999999999999999999999999"), "usage: digest EPOCH [REGIONS 1..4096]");
  EXPECT_EQ(UsageOf("digest 1 99999999999999999999"), "usage: digest EPOCH [REGIONS 1..4096]");
  EXPECT_EQ(UsageOf("set cache-size 99999999999999999999999G").rfind("set cache-size: ", 0), 0u);
  EXPECT_EQ(UsageOf("set interval 99999999999999999999999h").rfind("set interval: ", 0), 0u);
  EXPECT_EQ(UsageOf("set interval 18446744073709551615us").rfind("set interval: ", 0), 0u);
  // 10 KB lines: of one word, of many words, of a long argument.
  EXPECT_EQ(UsageOf(std::string(10 * 1024, 'a')), "request longer than 511 bytes");
  std::string many;
  for (int i = 0; i < 2000; ++i) many += "x ";
  EXPECT_EQ(UsageOf(many), "request longer than 511 bytes");
  EXPECT_EQ(UsageOf("set reverse-to " + std::string(10 * 1024, 'h')), "request longer than 511 bytes");
  // At the bound: the longest accepted line is 511 bytes.
  EXPECT_TRUE(SplitRequestLine(std::string(kMaxRequestBytes - 1, 'a')).ok());
  EXPECT_FALSE(SplitRequestLine(std::string(kMaxRequestBytes, 'a')).ok());
  // An unknown word near the bound is echoed shortened, so the answer stays short.
  std::string msg = UsageOf(std::string(500, 'z'));
  EXPECT_LT(msg.size(), 300u) << msg;
  // Empty words never reach the parser as words.
  auto w = SplitRequestLine("set   interval  \t 1s  ");
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(*w, (std::vector<std::string>{"set", "interval", "1s"}));
  EXPECT_FALSE(ParseRequest({}).ok());
  EXPECT_FALSE(ParseRequest({""}).ok());
  // NUL and DEL inside a line.
  EXPECT_EQ(UsageOf(std::string("status\0x", 8)), "request has a non-printable byte");
  EXPECT_EQ(UsageOf("status\x7f"), "request has a non-printable byte");
}

TEST(ControlReply, RenderAndParseAreInverse) {
  EXPECT_EQ(Render(Reply::Ok()), "{\"ok\":true}");
  Json m = Json::object();
  m["b"] = 1;
  m["a"] = "x";
  EXPECT_EQ(Render(Reply::Ok(m)), "{\"ok\":true,\"b\":1,\"a\":\"x\"}") << "members keep their order";
  EXPECT_EQ(Render(Reply::Usage("bad \"x\"\n")), "{\"ok\":false,\"error\":\"bad \\\"x\\\"\\n\",\"usage\":true}");
  EXPECT_EQ(Render(Reply::Fail("no")), "{\"ok\":false,\"error\":\"no\",\"usage\":false}");
  // Bytes that are not UTF-8 are replaced, not fatal.
  std::string r = Render(Reply::Fail(std::string("bad \xff byte")));
  EXPECT_EQ(r.rfind("{\"ok\":false,\"error\":\"bad ", 0), 0u) << r;
  EXPECT_EQ(Quote("a\"b"), "\"a\\\"b\"");

  auto p = ParseReply(Render(Reply::Usage("nope")));
  ASSERT_TRUE(p.ok());
  EXPECT_FALSE(p->ok);
  EXPECT_TRUE(p->usage);
  EXPECT_EQ(p->error, "nope");
  p = ParseReply("{\"ok\":true,\"epoch\":3}");
  ASSERT_TRUE(p.ok());
  EXPECT_TRUE(p->ok);
  EXPECT_EQ(p->body["epoch"], 3);
  for (const char* bad : {"", "{", "[1]", "{\"ok\":1}", "{\"x\":true}", "null", "{\"ok\":true}}"}) {
    EXPECT_FALSE(ParseReply(bad).ok()) << bad;
  }
}

}  // namespace
}  // namespace romulus::control
