// MarkIoFlusher: the kernel's IO_FLUSHER mark, on the caller and on the
// threads it starts afterwards (disk-export marks itself before its threads).
#include "disk/io_flusher.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <string>
#include <thread>

namespace romulus::disk {
namespace {

// CAP_SYS_RESOURCE (bit 24) in this process's effective set: both prctl
// calls need it (a container's root may lack it; the Xen lab's dom0 has it,
// and its disk-scenario checks the export's log says it is marked).
bool HaveSysResource() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("CapEff:", 0) == 0) return (std::stoull(line.substr(7), nullptr, 16) >> 24) & 1;
  }
  return false;
}

// In a child, so the test process itself stays unmarked: 0 = marked and
// inherited, 2 = no permission, 3 = unsupported kernel, 1 = wrong.
int MarkInChild() {
  pid_t pid = ::fork();
  if (pid == 0) {
    auto before = IsIoFlusher();
    if (!before.ok()) _exit(before.status().code() == Code::kUnsupported ? 3 : 1);
    if (*before) _exit(1);
    Status st = MarkIoFlusher();
    if (!st.ok()) _exit(st.code() == Code::kUnsupported ? 3 : st.message().find("CAP_SYS_RESOURCE") != std::string::npos ? 2 : 1);
    auto self = IsIoFlusher();
    bool in_thread = false;
    std::thread t([&] {
      auto r = IsIoFlusher();
      in_thread = r.ok() && *r;
    });
    t.join();
    _exit(self.ok() && *self && in_thread ? 0 : 1);
  }
  int status = 0;
  if (pid < 0 || ::waitpid(pid, &status, 0) != pid || !WIFEXITED(status)) return 1;
  return WEXITSTATUS(status);
}

TEST(IoFlusher, MarksTheCallerAndTheThreadsItStartsAfterwards) {
  if (!HaveSysResource()) {
    // Then the mark must be refused, and say why.
    Status st = MarkIoFlusher();
    ASSERT_FALSE(st.ok());
    EXPECT_NE(st.message().find("CAP_SYS_RESOURCE"), std::string::npos) << st.ToString();
    GTEST_SKIP() << "no CAP_SYS_RESOURCE here: the mark itself is checked in the Xen lab (disk-scenario)";
  }
  const int rc = MarkInChild();
  if (rc == 3) GTEST_SKIP() << "the kernel predates PR_SET_IO_FLUSHER (Linux 5.6)";
  EXPECT_EQ(rc, 0);
}

TEST(IoFlusher, TheTestProcessItselfIsNotMarked) {
  if (!HaveSysResource()) GTEST_SKIP() << "no CAP_SYS_RESOURCE: PR_GET_IO_FLUSHER is refused too";
  auto r = IsIoFlusher();
  if (!r.ok() && r.status().code() == Code::kUnsupported) GTEST_SKIP() << r.status().ToString();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_FALSE(*r);
}

}  // namespace
}  // namespace romulus::disk
