// Host-side tests of PlugQdisc: what can be checked on a kernel WITHOUT
// sch_plug (the build machines' kernel lacks CONFIG_NET_SCH_PLUG): clear errors,
// nothing left behind after a failed set-up, ownership rules, stale cleanup of
// the vif redirect. The buffering itself is proven by scripts/netbuf-lab in a
// VM running the Debian kernel (tests/netbuf/plug_lab.cc).
#include "netbuf/plug_qdisc.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <string>

#include "tests/netbuf/netns_util.h"

namespace romulus::netbuf {
namespace {

using testing::InNetns;
using testing::Netns;
using testing::Sh;
using testing::ShOut;

bool Contains(const std::string& hay, const std::string& needle) {
  return hay.find(needle) != std::string::npos;
}

TEST(PlugQdiscTest, IfbNameIsBoundedAndDeterministic) {
  EXPECT_EQ(IfbNameFor("vif3.0"), "rmb-vif3.0");
  std::string a = IfbNameFor("vif32767.255-emu");
  EXPECT_LE(a.size(), 15u);
  EXPECT_EQ(a, IfbNameFor("vif32767.255-emu"));
  EXPECT_NE(a, IfbNameFor("vif32767.254-emu"));
  EXPECT_EQ(a.rfind("rmb-", 0), 0u);
}

TEST(PlugQdiscTest, BadInterfaceNameIsClear) {
  for (const std::string& name : {std::string(""), std::string("a/b"),
                                  std::string("this-name-is-far-too-long")}) {
    auto p = PlugQdisc::Create(name);
    ASSERT_FALSE(p.ok()) << name;
    EXPECT_EQ(p.status().code(), Code::kInvalidArgument) << p.status().ToString();
    EXPECT_TRUE(Contains(p.status().message(), "not a valid network interface name"))
        << p.status().ToString();
  }
  auto p = PlugQdisc::Create("rnbnosuch0");
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), Code::kInvalidArgument) << p.status().ToString();
  EXPECT_TRUE(Contains(p.status().message(), "no network interface named 'rnbnosuch0'"))
      << p.status().ToString();
  auto v = PlugQdisc::CreateForVif("rnbnosuch0");
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().code(), Code::kInvalidArgument) << v.status().ToString();
}

// A fresh namespace with a veth pair g<->p, both up.
class NetnsFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root to create network namespaces";
    std::string tag = std::to_string(getpid() % 100000);
    ns_ = Netns::Create("rnb-test-" + tag);
    if (!ns_) GTEST_SKIP() << "cannot create a network namespace (ip netns add failed)";
    g_ = "rnbg" + tag;
    p_ = "rnbp" + tag;
    if (Sh(ns_->ip() + "link add " + g_ + " type veth peer name " + p_) != 0 ||
        Sh(ns_->ip() + "link set " + g_ + " up") != 0 ||
        Sh(ns_->ip() + "link set " + p_ + " up") != 0) {
      GTEST_SKIP() << "cannot create a veth pair (no veth support?)";
    }
  }
  std::string Tc(const std::string& args) { return ShOut(ns_->tc() + "" + args); }
  bool KernelHasPlug() {
    if (Sh(ns_->tc() + "qdisc add dev " + g_ + " root handle 7: plug") == 0) {
      Sh(ns_->tc() + "qdisc del dev " + g_ + " root");
      return true;
    }
    return false;
  }

  std::unique_ptr<Netns> ns_;
  std::string g_, p_;
};

TEST_F(NetnsFixture, MissingSchPlugIsExplained) {
  bool has_plug = KernelHasPlug();
  InNetns in(*ns_);
  ASSERT_TRUE(in.ok());
  auto p = PlugQdisc::Create(g_);
  if (has_plug) {
    // A kernel with sch_plug (e.g. Debian's): the plug must be ours and go away.
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    EXPECT_TRUE(Contains(Tc("qdisc show dev " + g_), "plug 524d:"));
    EXPECT_TRUE((*p)->Close().ok());
    EXPECT_FALSE(Contains(Tc("qdisc show dev " + g_), "plug"));
    GTEST_SKIP() << "this kernel has sch_plug: the missing-module message cannot be checked here";
  }
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), Code::kUnsupported) << p.status().ToString();
  const std::string m = p.status().message();
  EXPECT_TRUE(Contains(m, "no sch_plug (CONFIG_NET_SCH_PLUG)")) << m;
  EXPECT_TRUE(Contains(m, "modprobe sch_plug")) << m;
  EXPECT_TRUE(Contains(m, g_)) << m;
  // Nothing left behind: the root qdisc is the kernel's default again.
  EXPECT_FALSE(Contains(Tc("qdisc show dev " + g_), "524d:"));
}

TEST_F(NetnsFixture, VifSetupFailureLeavesNothingBehind) {
  bool has_plug = KernelHasPlug();
  InNetns in(*ns_);
  ASSERT_TRUE(in.ok());
  auto p = PlugQdisc::CreateForVif(p_);
  if (has_plug) {
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    EXPECT_TRUE((*p)->Close().ok());
  } else {
    ASSERT_FALSE(p.ok());
    EXPECT_EQ(p.status().code(), Code::kUnsupported) << p.status().ToString();
    EXPECT_TRUE(Contains(p.status().message(), "modprobe sch_plug")) << p.status().ToString();
  }
  // No IFB, no ingress qdisc, no filter left on the "vif".
  EXPECT_FALSE(Contains(ShOut(ns_->ip() + "link show"), IfbNameFor(p_)));
  EXPECT_FALSE(Contains(Tc("qdisc show dev " + p_), "ingress"));
}

TEST_F(NetnsFixture, ForeignRootQdiscIsRefused) {
  ASSERT_EQ(Sh(ns_->tc() + "qdisc add dev " + g_ + " root handle 1: pfifo limit 10"), 0);
  InNetns in(*ns_);
  ASSERT_TRUE(in.ok());
  auto p = PlugQdisc::Create(g_);
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), Code::kInvalidArgument) << p.status().ToString();
  EXPECT_TRUE(Contains(p.status().message(), "did not install (pfifo 1:)")) << p.status().ToString();
  // ... and left alone.
  EXPECT_TRUE(Contains(Tc("qdisc show dev " + g_), "pfifo 1:"));
}

// What a run killed after CreateForVif leaves: our IFB (marked by its alias),
// an ingress qdisc with our redirect at our priority. The next start removes it
// all; the same tc commands Remus used build it here (sch_plug is not needed).
TEST_F(NetnsFixture, StaleVifRedirectAndIfbAreRemoved) {
  const std::string ifb = IfbNameFor(p_);
  if (Sh(ns_->ip() + "link add " + ifb + " type ifb") != 0) GTEST_SKIP() << "no ifb in this kernel";
  ASSERT_EQ(Sh(ns_->ip() + "link set " + ifb + " alias 'romulus-netbuf " + p_ + "'"), 0);
  ASSERT_EQ(Sh(ns_->ip() + "link set " + ifb + " up"), 0);
  if (Sh(ns_->tc() + "qdisc add dev " + p_ + " ingress") != 0) GTEST_SKIP() << "no sch_ingress";
  if (Sh(ns_->tc() + "filter add dev " + p_ + " parent ffff: protocol all prio " +
         std::to_string(kFilterPrio) + " u32 match u32 0 0 action mirred egress redirect dev " +
         ifb) != 0) {
    GTEST_SKIP() << "no cls_u32 / act_mirred in this kernel";
  }
  ASSERT_TRUE(Contains(Tc("filter show dev " + p_ + " ingress"), "mirred"));
  InNetns in(*ns_);
  ASSERT_TRUE(in.ok());
  int removed = 0;
  Status s = CleanupStaleVif(p_, &removed);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(removed, 2);
  EXPECT_FALSE(Contains(ShOut(ns_->ip() + "link show"), ifb));
  EXPECT_FALSE(Contains(Tc("filter show dev " + p_ + " ingress"), "mirred"));
  EXPECT_FALSE(Contains(Tc("qdisc show dev " + p_), "ingress"));
  // Idempotent: nothing more to remove.
  s = CleanupStaleVif(p_, &removed);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(removed, 0);
}

// A foreign filter on the same ingress survives the cleanup, and so does the
// ingress qdisc it needs.
TEST_F(NetnsFixture, StaleCleanupKeepsForeignIngressFilters) {
  if (Sh(ns_->tc() + "qdisc add dev " + p_ + " ingress") != 0) GTEST_SKIP() << "no sch_ingress";
  if (Sh(ns_->tc() + "filter add dev " + p_ + " parent ffff: protocol all prio 7 u32 match u32 0 0 action mirred egress mirror dev " + g_) != 0 ||
      Sh(ns_->tc() + "filter add dev " + p_ + " parent ffff: protocol all prio " +
         std::to_string(kFilterPrio) + " u32 match u32 0 0 flowid 1:1") != 0) {
    GTEST_SKIP() << "no cls_u32 / act_mirred in this kernel";
  }
  InNetns in(*ns_);
  ASSERT_TRUE(in.ok());
  int removed = 0;
  Status s = CleanupStaleVif(p_, &removed);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(removed, 1);
  std::string filters = Tc("filter show dev " + p_ + " ingress");
  EXPECT_TRUE(Contains(filters, "pref 7 ")) << filters;
  EXPECT_FALSE(Contains(filters, "pref " + std::to_string(kFilterPrio) + " ")) << filters;
  EXPECT_TRUE(Contains(Tc("qdisc show dev " + p_), "ingress"));
}

// A device that merely carries our IFB name is never deleted.
TEST_F(NetnsFixture, ForeignDeviceWithOurIfbNameIsRefused) {
  const std::string ifb = IfbNameFor(p_);
  if (Sh(ns_->ip() + "link add " + ifb + " type ifb") != 0) GTEST_SKIP() << "no ifb in this kernel";
  InNetns in(*ns_);
  ASSERT_TRUE(in.ok());
  Status s = CleanupStaleVif(p_);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), Code::kInvalidArgument) << s.ToString();
  EXPECT_TRUE(Contains(s.message(), "is not Romulus'")) << s.ToString();
  EXPECT_TRUE(Contains(ShOut(ns_->ip() + "link show"), ifb));
}

}  // namespace
}  // namespace romulus::netbuf
