// The RealQemu fixture of tests/devicemodel: a real qemu-system-x86_64
// (Debian's qemu-system-x86, installed by scripts/setup; TCG, no guest,
// held before it starts with -S) listening for QMP on a Unix socket, with a
// DeviceModel connected to it (dm_). QEMU serves one QMP client at a time:
// a test that connects another resets dm_ first.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "common/subprocess.h"
#include "devicemodel/device_model.h"

namespace romulus::devicemodel {
namespace {

using namespace std::chrono_literals;
using transport::DeadlineIn;

std::string MakeTempDir() {
  std::string dir = (std::filesystem::temp_directory_path() / "qmp.XXXXXX").string();
  EXPECT_NE(mkdtemp(dir.data()), nullptr);
  return dir;
}

// A MakeTempDir removed when the test ends, however it ends (a failed
// ASSERT returns early).
struct ScopedTempDir {
  const std::string path = MakeTempDir();
  ~ScopedTempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

bool HaveQemu() { return ::access("/usr/bin/qemu-system-x86_64", X_OK) == 0; }

// A QEMU with no guest, held before it starts (-S), listening for QMP.
class RealQemu : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!HaveQemu()) GTEST_SKIP() << "qemu-system-x86_64 is missing (scripts/setup installs qemu-system-x86)";
    dir_ = MakeTempDir();
    sock_ = dir_ + "/qmp.sock";
    std::vector<std::string> argv = {"qemu-system-x86_64", "-machine", "q35,accel=tcg", "-nodefaults", "-display",
                                     "none", "-m", "32", "-S", "-qmp", "unix:" + sock_ + ",server=on,wait=off"};
    const std::vector<std::string> extra = ExtraArgs();
    argv.insert(argv.end(), extra.begin(), extra.end());
    pid_ = Spawn(argv, dir_ + "/qemu.log");
    ASSERT_GT(pid_, 0);
    // QEMU creates the socket before it listens for QMP; connecting is
    // retried until then (bounded).
    const auto until = std::chrono::steady_clock::now() + 30s;
    Result<std::unique_ptr<QmpClient>> c = Status::Closed("not tried");
    while (std::chrono::steady_clock::now() < until) {
      c = QmpClient::Connect(sock_, DeadlineIn(10000ms));
      if (c.ok()) break;
      int st = 0;
      ASSERT_FALSE(WaitExit(pid_, 50ms, &st)) << "QEMU exited: " << Log();
    }
    ASSERT_TRUE(c.ok()) << c.status().ToString() << "\n" << Log();
    dm_ = std::make_unique<DeviceModel>(std::move(*c));
  }
  // More options for the QEMU a fixture starts (devices, a display).
  virtual std::vector<std::string> ExtraArgs() const { return {}; }
  void TearDown() override {
    dm_.reset();
    KillAndReap(pid_);
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }
  std::string Log() const {
    std::ifstream in(dir_ + "/qemu.log");
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

  std::string dir_, sock_;
  pid_t pid_ = -1;
  std::unique_ptr<DeviceModel> dm_;
};

}  // namespace
}  // namespace romulus::devicemodel
