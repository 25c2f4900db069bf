#include "common/thread_name.h"

#include <sys/syscall.h>
#include <unistd.h>

#include <fstream>
#include <string>
#include <thread>

#include <gtest/gtest.h>

namespace romulus {
namespace {

// What `ps -L` and /proc/PID/task/TID/stat show, read the way they read it.
std::string KernelCommOf(pid_t tid) {
  std::ifstream f("/proc/self/task/" + std::to_string(tid) + "/comm");
  std::string s;
  std::getline(f, s);
  return s;
}

TEST(ThreadNameTest, TheKernelShowsTheName) {
  std::string seen, got;
  std::thread t([&] {
    NameThisThread("save-reader");
    seen = KernelCommOf(static_cast<pid_t>(syscall(SYS_gettid)));
    got = ThisThreadName();
  });
  t.join();
  EXPECT_EQ(seen, "save-reader");
  EXPECT_EQ(got, "save-reader");
}

TEST(ThreadNameTest, ALongNameIsCutAtFifteenBytes) {
  std::string seen;
  std::thread t([&] {
    NameThisThread("a-name-longer-than-fifteen-bytes");
    seen = KernelCommOf(static_cast<pid_t>(syscall(SYS_gettid)));
  });
  t.join();
  EXPECT_EQ(seen, "a-name-longer-t");
}

TEST(ThreadNameTest, NamingOneThreadLeavesTheOthers) {
  const std::string before = ThisThreadName();
  std::thread t([] { NameThisThread("other"); });
  t.join();
  EXPECT_EQ(ThisThreadName(), before);
}

}  // namespace
}  // namespace romulus
