// The backup's reading of the primary's domain-info record: the replica it
// builds for PV and PVH guests, and the records it must refuse.
#include "xen/replica_spec.h"

#include <gtest/gtest.h>

#include <string>

namespace romulus::xen {
namespace {

std::map<std::string, std::string> Info(const std::string& text) {
  return ParseDomainInfo(std::span(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
}

const std::string kPv =
    "name=g1\nuuid=0011aabb-ccdd-eeff-0011-223344556677\nmax_vcpus=2\nmax_memkb=131072\ntarget_kb=65536\n"
    "guest_pages=32768\nhvm=0\ntype=pv\n";
const std::string kPvh =
    "name=g2\nuuid=0011aabb-ccdd-eeff-0011-223344556677\nmax_vcpus=1\nmax_memkb=131072\ntarget_kb=131072\n"
    "guest_pages=1044480\nhvm=1\ntype=pvh\nhap=1\nemu_flags=1\nmisc_flags=0\ntimer_mode=1\npaging_pool_kb=2048\n";

TEST(ReplicaSpecTest, PvGuest) {
  auto s = ReplicaSpecFromInfo(Info(kPv));
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(s->type, GuestType::kPv);
  EXPECT_EQ(s->max_vcpus, 2u);
  EXPECT_EQ(s->max_memkb, 131072u);
  EXPECT_EQ(s->target_kb, 65536u);
  EXPECT_EQ(s->uuid, "0011aabb-ccdd-eeff-0011-223344556677");
  EXPECT_EQ(ReplicaMemoryKb(*s), 65536u);  // no paging pool for PV
}

TEST(ReplicaSpecTest, PrimaryWithoutTypeKeyIsPv) {
  // What a primary released before PVH support sends.
  auto s = ReplicaSpecFromInfo(Info("name=g\nuuid=x\nmax_vcpus=1\nmax_memkb=1024\ntarget_kb=1024\nhvm=0\n"));
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(s->type, GuestType::kPv);
  EXPECT_EQ(s->uuid, "00000000-0000-0000-0000-000000000000");  // a bad UUID costs only the identity
}

TEST(ReplicaSpecTest, PvhGuestBuildsItsContainer) {
  auto s = ReplicaSpecFromInfo(Info(kPvh));
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(s->type, GuestType::kPvh);
  EXPECT_TRUE(s->hap);
  EXPECT_EQ(s->emulation_flags, uint32_t(XEN_X86_EMU_LAPIC));
  EXPECT_EQ(s->timer_mode, 1u);
  // The primary's 2 MiB pool is below libxl's floor for 128 MiB and 1 vCPU
  // (4 * (256 + 2 * 128) = 2048 KiB: equal here), so the floor holds.
  EXPECT_EQ(MinPagingPoolKb(131072, 1), 2048u);
  EXPECT_EQ(ReplicaMemoryKb(*s), 131072u + 2048u);
}

TEST(ReplicaSpecTest, PagingPoolNeverBelowTheFloor) {
  std::string t = kPvh;
  t.replace(t.find("paging_pool_kb=2048"), 19, "paging_pool_kb=4");
  auto s = ReplicaSpecFromInfo(Info(t));
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(ReplicaMemoryKb(*s), 131072u + MinPagingPoolKb(131072, 1));
}

// What a primary sends for the Xen lab's HVM guest (XenDriver::BeginEpoch):
// the container (everything but vPCI emulated), HPET and VPT params, and the
// device model's facts.
const std::string kHvm =
    "name=g3\nuuid=0011aabb-ccdd-eeff-0011-223344556677\nmax_vcpus=2\nmax_memkb=131072\ntarget_kb=131072\n"
    "guest_pages=1044480\nhvm=1\ntype=hvm\nhap=0\nemu_flags=1023\nmisc_flags=0\ntimer_mode=0\npaging_pool_kb=2048\n"
    "hpet=1\nvpt_align=1\ndm_version=1\ndm_machine=xenfv\ndm_suppress_vmdesc=1\ndm_max_ram_below_4g=0\n"
    "dm_memory_mib=128\ndm_vcpus=2\ndm_maxcpus=2\ndm_acpi=1\ndm_serials=file\ndm_kernel=/lab/domu/vmlinuz\n";

TEST(ReplicaSpecTest, HvmCarriesItsDeviceModel) {
  auto s = ReplicaSpecFromInfo(Info(kHvm));
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(s->type, GuestType::kHvm);
  EXPECT_FALSE(s->hap);
  EXPECT_EQ(s->emulation_flags, 1023u);
  EXPECT_TRUE(s->hpet);
  EXPECT_TRUE(s->vpt_align);
  ASSERT_TRUE(s->device_model.has_value());
  EXPECT_EQ(s->device_model->memory_mib, 128u);
  EXPECT_EQ(s->device_model->maxcpus, 2u);
  ASSERT_EQ(s->device_model->serials.size(), 1u);
  // libxl may leave PIRQ use out (pirq=0).
  std::string t = kHvm;
  t.replace(t.find("emu_flags=1023"), 14, "emu_flags=511");
  EXPECT_TRUE(ReplicaSpecFromInfo(Info(t)).ok());
  // A PVH record gets no device model.
  auto pvh = ReplicaSpecFromInfo(Info(kPvh));
  ASSERT_TRUE(pvh.ok());
  EXPECT_FALSE(pvh->device_model.has_value());
}

TEST(ReplicaSpecTest, DamagedHvmRecordsAreRefused) {
  struct Case {
    std::string from, to;
    Code code;
  } cases[] = {
      {"emu_flags=1023", "emu_flags=1", Code::kCorruption},     // a PVH guest posing as HVM
      {"emu_flags=1023", "emu_flags=2047", Code::kCorruption},  // vPCI: not a domU's
      {"emu_flags=1023", "emu_flags=1022", Code::kCorruption},  // no LAPIC
      {"hpet=1\n", "", Code::kCorruption},
      {"vpt_align=1", "vpt_align=7", Code::kCorruption},
      {"dm_version=1\n", "", Code::kCorruption},                // an HVM guest without its device model
      {"dm_version=1", "dm_version=9", Code::kUnsupported},     // a newer primary
      {"dm_maxcpus=2", "dm_maxcpus=3", Code::kCorruption},      // disagrees with the domain
      {"dm_memory_mib=128", "dm_memory_mib=0", Code::kCorruption},
      {"dm_machine=xenfv", "dm_machine=q35", Code::kCorruption},
  };
  for (const Case& c : cases) {
    std::string t = kHvm;
    auto at = t.find(c.from);
    ASSERT_NE(at, std::string::npos) << c.from;
    t.replace(at, c.from.size(), c.to);
    auto s = ReplicaSpecFromInfo(Info(t));
    ASSERT_FALSE(s.ok()) << c.from << " -> " << c.to;
    EXPECT_EQ(s.status().code(), c.code) << c.from << " -> " << c.to << ": " << s.status().ToString();
  }
}

TEST(ReplicaSpecTest, DamagedRecordsAreRefused) {
  struct Case {
    std::string from, to;
  } cases[] = {
      {"type=pvh", "type=pvx"},          // unknown type
      {"hvm=1", "hvm=0"},                // type and hvm disagree
      {"emu_flags=1", "emu_flags=1023"},  // an HVM guest posing as PVH
      {"emu_flags=1", "emu_flags=-1"},
      {"hap=1", "hap=2"},
      {"hap=1\n", ""},                   // missing key
      {"timer_mode=1", "timer_mode=99"},
      {"misc_flags=0", "misc_flags=6"},
      {"paging_pool_kb=2048", "paging_pool_kb=99999999999999999999999"},
      {"max_vcpus=1", "max_vcpus=0"},
      {"max_vcpus=1", "max_vcpus=100000"},
      {"max_memkb=131072", "max_memkb=abc"},
  };
  for (const Case& c : cases) {
    std::string t = kPvh;
    auto at = t.find(c.from);
    ASSERT_NE(at, std::string::npos) << c.from;
    t.replace(at, c.from.size(), c.to);
    auto s = ReplicaSpecFromInfo(Info(t));
    EXPECT_FALSE(s.ok()) << c.from << " -> " << c.to;
  }
}

TEST(ReplicaSpecTest, TargetAboveMaximumIsTheMaximum) {
  std::string t = kPv;
  t.replace(t.find("target_kb=65536"), 15, "target_kb=999999999");
  auto s = ReplicaSpecFromInfo(Info(t));
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->target_kb, s->max_memkb);
}

TEST(GuestTypeTest, FromTheHypervisorsFlags) {
  DomInfo d;
  EXPECT_EQ(d.type(), GuestType::kPv);
  d.hvm = true;
  d.emulation_flags = XEN_X86_EMU_LAPIC;
  EXPECT_EQ(d.type(), GuestType::kPvh);
  d.emulation_flags = XEN_X86_EMU_ALL;
  EXPECT_EQ(d.type(), GuestType::kHvm);
  d.emulation_flags = 0;  // an HVM container without even a LAPIC is no PVH guest
  EXPECT_EQ(d.type(), GuestType::kHvm);
  EXPECT_STREQ(GuestTypeName(GuestType::kPvh), "pvh");
}

TEST(GuestTypeTest, WhatEachHostCanProtect) {
  HostCaps stock{.hvm = true, .hap = true, .shadow = false};  // Debian's 4.17.7+ hypervisor
  HostCaps shadow{.hvm = true, .hap = true, .shadow = true};
  HostCaps nohap{.hvm = true, .hap = false, .shadow = false};
  Status pv = CheckCanProtect(stock, GuestType::kPv, false, "g");
  EXPECT_EQ(pv.code(), Code::kUnsupported);
  EXPECT_NE(pv.ToString().find("shadow paging"), std::string::npos);
  EXPECT_NE(pv.ToString().find("PVH"), std::string::npos);  // says what does work
  EXPECT_TRUE(CheckCanProtect(stock, GuestType::kPvh, true, "g").ok());
  EXPECT_TRUE(CheckCanProtect(shadow, GuestType::kPv, false, "g").ok());
  EXPECT_TRUE(CheckCanProtect(shadow, GuestType::kPvh, false, "g").ok());
  EXPECT_FALSE(CheckCanProtect(nohap, GuestType::kPvh, false, "g").ok());
}

// Only an HVM guest without PV drivers (none announced a suspend handler,
// no global callback) or asleep in an ACPI S state is suspended by the
// hypervisor; everything else is asked, so its front ends reconnect after a
// failover.
TEST(GuestTypeTest, WhoSuspendsTheGuest) {
  const GuestType hvm = GuestType::kHvm;
  EXPECT_EQ(ChooseSuspendWay(hvm, false, 0, 0), SuspendWay::kHypervisor);  // no PV drivers
  // Linux 6.x on Xen 4.17+: per-vCPU upcall vectors, the parameter left 0,
  // but its drivers announce the suspend (the lab's HVM guest).
  EXPECT_EQ(ChooseSuspendWay(hvm, true, 0, 0), SuspendWay::kAskGuest);
  EXPECT_EQ(ChooseSuspendWay(hvm, false, 0x0100000000000005ULL, 0), SuspendWay::kAskGuest);  // a vector callback
  EXPECT_EQ(ChooseSuspendWay(hvm, false, 28, 0), SuspendWay::kAskGuest);                     // a GSI callback
  EXPECT_EQ(ChooseSuspendWay(hvm, true, 28, 3), SuspendWay::kHypervisor);                    // asleep in S3
  // PV and PVH guests have no other consistent way: always asked, whatever
  // the parameters say.
  for (GuestType t : {GuestType::kPv, GuestType::kPvh}) {
    EXPECT_EQ(ChooseSuspendWay(t, false, 0, 0), SuspendWay::kAskGuest) << GuestTypeName(t);
    EXPECT_EQ(ChooseSuspendWay(t, false, 0, 3), SuspendWay::kAskGuest) << GuestTypeName(t);
  }
  EXPECT_STREQ(SuspendWayName(SuspendWay::kHypervisor), "hypervisor");
  EXPECT_STREQ(SuspendWayName(SuspendWay::kAskGuest), "ask-guest");
}

// A replica's memory and the rest of its checkpoint must be of one epoch.
TEST(ReplicaEpochsTest, EqualCountsRunForEveryGuestType) {
  for (GuestType t : {GuestType::kPv, GuestType::kPvh, GuestType::kHvm}) {
    EXPECT_TRUE(CheckReplicaEpochs(t, true, 5, 5, 40).ok());
    EXPECT_TRUE(CheckReplicaEpochs(t, false, 1, 1, 1).ok());
  }
}

TEST(ReplicaEpochsTest, LateCheckpointWithDisksOrDevicesCannotRun) {
  // libxenguest took checkpoint 6 after the commit of epoch 40 (the 5th)
  // gave up waiting: memory of epoch 41, disks or device state of 40.
  Status disks = CheckReplicaEpochs(GuestType::kPv, /*has_disks=*/true, 6, 5, 40);
  EXPECT_EQ(disks.code(), Code::kCorruption);
  EXPECT_NE(disks.message().find("disks"), std::string::npos) << disks.ToString();
  EXPECT_NE(disks.message().find("epoch 40"), std::string::npos) << disks.ToString();
  EXPECT_EQ(CheckReplicaEpochs(GuestType::kPvh, true, 6, 5, 40).code(), Code::kCorruption);
  Status hvm = CheckReplicaEpochs(GuestType::kHvm, /*has_disks=*/false, 6, 5, 40);
  EXPECT_EQ(hvm.code(), Code::kCorruption);
  EXPECT_NE(hvm.message().find("device model"), std::string::npos) << hvm.ToString();
}

TEST(ReplicaEpochsTest, LateCheckpointOfAMemoryOnlyGuestRuns) {
  // Its memory is its whole state: the next epoch's is a whole guest.
  EXPECT_TRUE(CheckReplicaEpochs(GuestType::kPv, false, 6, 5, 40).ok());
  EXPECT_TRUE(CheckReplicaEpochs(GuestType::kPvh, false, 7, 5, 40).ok());
}

TEST(ReplicaEpochsTest, ACommittedEpochNeverAppliedIsInternal) {
  EXPECT_EQ(CheckReplicaEpochs(GuestType::kPv, false, 4, 5, 40).code(), Code::kInternal);
}

}  // namespace
}  // namespace romulus::xen
