// DeviceModelBinaryVersion: the backup asks its --device-model for its
// QEMU release when an HVM guest's session begins (compared with the
// primary's, docs/DEVICE-MODEL.md §3.1). Shell scripts stand in for QEMU:
// what is tested is the asking and the reading, bounded, not QEMU (the real
// one answers in the Xen lab).
#include "xen/incoming_device_model.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

namespace romulus::xen {
namespace {

class FakeQemu : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/romulus-fakeqemu-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  // An executable script with `body` after the #! line.
  std::string Script(const std::string& name, const std::string& body) {
    const std::string path = dir_ + "/" + name;
    std::ofstream(path) << "#!/bin/sh\n" << body << "\n";
    chmod(path.c_str(), 0755);
    return path;
  }
  std::string dir_;
};

// The check's own scratch directories in /tmp.
size_t ScratchDirs() {
  size_t n = 0;
  for (const auto& e : std::filesystem::directory_iterator("/tmp")) {
    n += e.path().filename().string().rfind("romulus-qemu-version-", 0) == 0;
  }
  return n;
}

TEST_F(FakeQemu, ReadsTheReleaseFromTheFirstLine) {
  const size_t before = ScratchDirs();
  const std::string qemu = Script("qemu", "[ \"$1\" = --version ] || exit 9\n"
                                          "echo 'QEMU emulator version 7.2.19 (Debian 1:7.2+dfsg-7+deb12u18)'\n"
                                          "echo 'Copyright (c) 2003-2022 Fabrice Bellard and the QEMU Project developers'");
  auto v = DeviceModelBinaryVersion(qemu);
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_EQ(*v, (devicemodel::QemuVersion{7, 2, 19}));
  // Nothing of the run is left behind in /tmp.
  EXPECT_EQ(ScratchDirs(), before);
}

TEST_F(FakeQemu, WhatIsNotAReleaseIsAnError) {
  auto wrapper = DeviceModelBinaryVersion(Script("wrapper", "echo 'flaky-qemu: refusing to start'"));
  EXPECT_EQ(wrapper.status().code(), Code::kInvalidArgument) << wrapper.status().ToString();
  auto failing = DeviceModelBinaryVersion(Script("failing", "echo 'QEMU emulator version 9.0.0'; exit 1"));
  EXPECT_FALSE(failing.ok());
  EXPECT_NE(failing.status().ToString().find("exited 1"), std::string::npos) << failing.status().ToString();
  auto missing = DeviceModelBinaryVersion(dir_ + "/no-such-qemu");
  EXPECT_FALSE(missing.ok());
}

TEST_F(FakeQemu, AHangingBinaryIsBounded) {
  // Killed after the bound (10 s), then an error: the session is not held up for ever.
  auto hung = DeviceModelBinaryVersion(Script("hung", "exec sleep 600"));
  EXPECT_FALSE(hung.ok());
}

}  // namespace
}  // namespace romulus::xen
