// devicemodel::DeviceStateSlot: an HVM replica's device state commits with
// its epoch or not at all, bounded, without reallocating in steady state.
#include "devicemodel/device_state_slot.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace romulus::devicemodel {
namespace {

// A QEMU migration stream's magic, then `v` (n bytes in all).
std::vector<uint8_t> State(size_t n, uint8_t v) {
  std::vector<uint8_t> s(n, v);
  for (size_t i = 0; i < 4 && i < n; i++) s[i] = uint8_t("QEVM"[i]);
  return s;
}

TEST(DeviceStateSlot, CommitsWithItsEpochOnly) {
  DeviceStateSlot slot(1 << 20);
  EXPECT_TRUE(slot.committed().empty());
  EXPECT_FALSE(slot.HasStaged(1));
  ASSERT_TRUE(slot.Stage(1, State(6159, 1)).ok());
  EXPECT_TRUE(slot.HasStaged(1));
  EXPECT_FALSE(slot.HasStaged(2));  // another epoch's state is not this one's
  EXPECT_TRUE(slot.committed().empty()) << "staged is not committed";
  slot.Commit();
  EXPECT_EQ(slot.committed_epoch(), 1u);
  ASSERT_EQ(slot.committed().size(), 6159u);
  EXPECT_EQ(slot.committed()[6158], 1);
  EXPECT_FALSE(slot.HasStaged(1));

  // Epoch 2 is staged, then dropped (its memory never committed): the
  // committed state stays epoch 1's.
  ASSERT_TRUE(slot.Stage(2, State(100, 2)).ok());
  slot.Discard();
  EXPECT_FALSE(slot.HasStaged(2));
  EXPECT_EQ(slot.committed_epoch(), 1u);
  ASSERT_EQ(slot.committed().size(), 6159u);
  EXPECT_EQ(slot.committed()[6158], 1);

  ASSERT_TRUE(slot.Stage(3, State(200, 3)).ok());
  slot.Commit();
  EXPECT_EQ(slot.committed_epoch(), 3u);
  ASSERT_EQ(slot.committed().size(), 200u);
  EXPECT_EQ(slot.committed()[199], 3);
}

TEST(DeviceStateSlot, RefusesDamagedAndOversizeStates) {
  DeviceStateSlot slot(4096);
  ASSERT_TRUE(slot.Stage(1, State(10, 1)).ok());
  Status twice = slot.Stage(1, State(10, 9));
  EXPECT_EQ(twice.code(), Code::kCorruption) << twice.ToString();
  slot.Commit();
  EXPECT_EQ(slot.committed()[9], 1) << "the second state of epoch 1 replaced nothing";
  EXPECT_EQ(slot.Stage(2, {}).code(), Code::kCorruption);
  EXPECT_EQ(slot.Stage(2, std::vector<uint8_t>(100, 'Q')).code(), Code::kCorruption) << "no QEVM magic";
  EXPECT_EQ(slot.Stage(2, State(3, 2)).code(), Code::kCorruption) << "shorter than the magic";
  Status big = slot.Stage(2, State(4097, 2));
  EXPECT_EQ(big.code(), Code::kStorage) << big.ToString();
  EXPECT_NE(big.ToString().find("--max-device-state"), std::string::npos) << big.ToString();
  EXPECT_FALSE(slot.HasStaged(2));
  EXPECT_TRUE(slot.Stage(2, State(4096, 2)).ok()) << "exactly the bound fits";
}

TEST(DeviceStateSlot, SteadyStateReusesItsBuffers) {
  DeviceStateSlot slot(1 << 20);
  for (uint64_t e = 1; e <= 2; e++) {
    ASSERT_TRUE(slot.Stage(e, State(6159, uint8_t(e))).ok());
    slot.Commit();
  }
  // Both buffers now hold 6159-byte capacity: later epochs of the same
  // size move no allocation (the buffers alternate, their data stay put).
  const uint8_t* a = slot.committed().data();
  ASSERT_TRUE(slot.Stage(3, State(6159, 3)).ok());
  slot.Commit();
  const uint8_t* b = slot.committed().data();
  ASSERT_TRUE(slot.Stage(4, State(6159, 4)).ok());
  slot.Commit();
  EXPECT_EQ(slot.committed().data(), a);
  ASSERT_TRUE(slot.Stage(5, State(6159, 5)).ok());
  slot.Commit();
  EXPECT_EQ(slot.committed().data(), b);
}

}  // namespace
}  // namespace romulus::devicemodel
