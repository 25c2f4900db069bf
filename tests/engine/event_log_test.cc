// events::EventLog: the JSON-lines stream both roles write (docs/EVENTS.md).
#include "events/event_log.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <thread>

#include "events/catalog.h"

namespace romulus::events {
namespace {

using namespace std::chrono_literals;

std::vector<Json> ReadLines(const std::string& path) {
  std::ifstream in(path);
  std::vector<Json> out;
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) continue;
    auto j = Json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!j.is_discarded()) out.push_back(j);
  }
  return out;
}

std::string TempPath(const std::string& name) {
  return ::testing::TempDir() + "/event_log_" + name + "_" + std::to_string(::getpid());
}

TEST(EventLog, LinesKeepTheEventFirstAndItsFieldsInOrder) {
  const std::string path = TempPath("order");
  ::unlink(path.c_str());
  EventLog log("backup");
  ASSERT_TRUE(log.Open(path));
  Commit(&log, 7, 0xabc);
  Failover(&log, "primary silent \"for\" 2 s", 7, 0xabc, true);
  auto lines = ReadLines(path);
  ASSERT_EQ(lines.size(), 2u);
  std::vector<std::string> keys;
  for (auto it = lines[0].begin(); it != lines[0].end(); ++it) keys.push_back(it.key());
  EXPECT_EQ(keys, (std::vector<std::string>{"event", "epoch", "digest", "time_ms", "seq", "role"}));
  EXPECT_EQ(lines[0]["event"], "commit");
  EXPECT_EQ(lines[0]["digest"], "0000000000000abc");
  EXPECT_EQ(lines[0]["seq"], 1);
  EXPECT_EQ(lines[0]["role"], "backup");
  EXPECT_EQ(lines[1]["reason"], "primary silent \"for\" 2 s");
  EXPECT_EQ(lines[1]["activated"], true);
  EXPECT_EQ(lines[1]["seq"], 2);
  // The raw line starts with the event name: `grep '"event":"commit"'` works.
  std::ifstream in(path);
  std::string first;
  std::getline(in, first);
  EXPECT_EQ(first.rfind("{\"event\":\"commit\",\"epoch\":7,", 0), 0u) << first;
  ::unlink(path.c_str());
}

TEST(EventLog, AppendsAndNeverGluesToATornLine) {
  const std::string path = TempPath("torn");
  {
    std::ofstream out(path, std::ios::trunc);
    out << "{\"event\":\"commit\",\"epoch\":1}\n{\"event\":\"comm";  // a predecessor killed mid-line
  }
  EventLog log("backup");
  ASSERT_TRUE(log.Open(path));
  Commit(&log, 2, 2);
  auto lines = ReadLines(path);
  ASSERT_EQ(lines.size(), 2u) << "the torn line is skipped, ours is whole";
  EXPECT_EQ(lines[0]["epoch"], 1);
  EXPECT_EQ(lines[1]["epoch"], 2);
  ::unlink(path.c_str());
}

TEST(EventLog, HostileTextIsEscapedNotThrown) {
  EventLog log("primary");
  Unprotected(&log, std::string("bad utf8 \xff\xfe and a newline\n and a quote \""));
  auto e = log.WaitFor("unprotected", 0, 0ms);
  ASSERT_TRUE(e.has_value());
  EXPECT_NE((*e)["reason"].get<std::string>().find("a quote \""), std::string::npos);
}

TEST(EventLog, WaitForReturnsTheFirstMatchAfterASeqOrTimesOut) {
  EventLog log("primary");
  Protected(&log, 3);
  Unprotected(&log, "backup lost");
  Protected(&log, 9);
  auto first = log.WaitFor("protected", 0, 0ms);
  ASSERT_TRUE(first);
  EXPECT_EQ((*first)["epoch"], 3);
  auto next = log.WaitFor("protected", (*first)["seq"].get<uint64_t>(), 0ms);
  ASSERT_TRUE(next);
  EXPECT_EQ((*next)["epoch"], 9);
  EXPECT_FALSE(log.WaitFor("protected", (*next)["seq"].get<uint64_t>(), 20ms).has_value());
  EXPECT_FALSE(log.WaitFor("failover", 0, 20ms).has_value());
  // One that happens while waiting wakes the waiter.
  std::thread later([&] {
    std::this_thread::sleep_for(50ms);
    Switchover(&log, 12, true, "handed over");
  });
  auto sw = log.WaitFor("switchover", log.last_seq(), 10s);
  later.join();
  ASSERT_TRUE(sw);
  EXPECT_EQ((*sw)["epoch"], 12);
  // A cancelled wait ends.
  std::atomic<bool> cancel{true};
  EXPECT_FALSE(log.WaitFor("never", 0, 10s, &cancel).has_value());
}

TEST(EventLog, AFailedWriteIsCountedAndTheEventStillReachesWaiters) {
  EventLog log("backup");
  ASSERT_TRUE(log.Open("/dev/full"));
  Commit(&log, 1, 1);
  EXPECT_FALSE(log.healthy());
  EXPECT_EQ(log.failed_writes(), 1u);
  EXPECT_TRUE(log.WaitFor("commit", 0, 0ms).has_value());
}

}  // namespace
}  // namespace romulus::events
