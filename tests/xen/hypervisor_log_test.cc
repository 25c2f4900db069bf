// Reading the hypervisor's console ring about one domain (xen/hypervisor_log.h):
// the lines that explain why a guest shut down instead of suspending.
#include "xen/hypervisor_log.h"

#include <gtest/gtest.h>

#include <string>

namespace romulus::xen {
namespace {

// Shaped like the ring of the lab boot in which a PVH guest (d4) triple-faulted
// after 60 checkpoints (xl dmesg, guest_loglvl=all, Xen 4.17.7): per-epoch
// save records, the guest's upcall re-registration after its resume, then the
// triple fault, the vCPU dump, and the backup's replica (d5) being built.
const char kRing[] =
    "(XEN) HVM d4v0 save: CPU\n"
    "(XEN) HVM d4 save: PIC\n"
    "(XEN) HVM d4v0 save: CPU_MSR\n"
    "(XEN) d4v0: upcall vector f3\n"
    "(XEN) d41v0: unrelated line of domain 41\n"
    "(XEN) d4v0 Triple fault - invoking HVM shutdown action 1\n"
    "(XEN) *** Dumping Dom4 vcpu#0 state: ***\n"
    "(XEN) ----[ Xen-4.17.7  x86_64  debug=n  Not tainted ]----\n"
    "(XEN) CPU:    0\n"
    "(XEN) RIP:    0010:[<ffffffff8154902b>]\n"
    "(XEN) RFLAGS: 0000000000000246   CONTEXT: hvm guest (d4v0)\n"
    "(XEN) rax: dead000000000122   rbx: ffff888005e0eb48   rcx: ffffffff82bc3b40\n"
    "(XEN) cr3: 0000000002a10000   cr2: 0000000000000000\n"
    "(XEN) ds: 0000   es: 0000   fs: 0000   gs: 0000   ss: 0018   cs: 0010\n"
    "(XEN) HVM5 restore: CPU 0\n"
    "(XEN) HVM5 restore: LAPIC 0\n"
    "(XEN) d5v0: upcall vector f3\n";

TEST(HypervisorLogTest, FindsTheTripleFaultAndItsDump) {
  DomainLogExcerpt ex = ExcerptForDomain(kRing, 4);
  EXPECT_EQ(ex.triple_fault, "d4v0 Triple fault - invoking HVM shutdown action 1");
  EXPECT_TRUE(ex.crash.empty());
  ASSERT_EQ(ex.lines.size(), 9u);
  EXPECT_EQ(ex.lines[0], ex.triple_fault);
  EXPECT_EQ(ex.lines[1], "*** Dumping Dom4 vcpu#0 state: ***");
  EXPECT_EQ(ex.lines[3], "CPU:    0");
  EXPECT_EQ(ex.lines[4], "RIP:    0010:[<ffffffff8154902b>]");
  EXPECT_EQ(ex.lines.back(), "ds: 0000   es: 0000   fs: 0000   gs: 0000   ss: 0018   cs: 0010");
  // Neither the save records, nor the upcall line, nor d41's line, nor the next domain's restore.
  for (const std::string& l : ex.lines) {
    EXPECT_EQ(l.find("save:"), std::string::npos) << l;
    EXPECT_EQ(l.find("upcall"), std::string::npos) << l;
    EXPECT_EQ(l.find("d41"), std::string::npos) << l;
    EXPECT_EQ(l.find("HVM5"), std::string::npos) << l;
  }
  std::string why = ExplainUnexpectedShutdown(ex, 4, "reboot");
  EXPECT_NE(why.find("\"d4v0 Triple fault - invoking HVM shutdown action 1\""), std::string::npos) << why;
  EXPECT_NE(why.find("triple-faults down with reason reboot"), std::string::npos) << why;
}

TEST(HypervisorLogTest, OtherDomainsAreNotMixedIn) {
  DomainLogExcerpt ex = ExcerptForDomain(kRing, 5);
  EXPECT_TRUE(ex.triple_fault.empty());
  EXPECT_TRUE(ex.lines.empty());  // d5 has only per-epoch records and its upcall line
  ex = ExcerptForDomain(kRing, 41);
  ASSERT_EQ(ex.lines.size(), 1u);
  EXPECT_EQ(ex.lines[0], "d41v0: unrelated line of domain 41");
}

TEST(HypervisorLogTest, TokensMatchWholeDomainIds) {
  const char ring[] =
      "(XEN) [  12.5] d7 crashed in a test\n"
      "(XEN) dom7: something\n"
      "(XEN) d77 other\n"
      "(XEN) xd7 not a domain\n"
      "(XEN) d7vx not a vcpu\n"
      "(XEN) Dom7 at the end: Dom7\n";
  DomainLogExcerpt ex = ExcerptForDomain(ring, 7);
  ASSERT_EQ(ex.lines.size(), 3u);
  EXPECT_EQ(ex.lines[0], "d7 crashed in a test");  // the timestamp is stripped
  EXPECT_EQ(ex.lines[1], "dom7: something");
  EXPECT_EQ(ex.lines[2], "Dom7 at the end: Dom7");
  EXPECT_EQ(ex.crash, "d7 crashed in a test");
  EXPECT_EQ(ExplainUnexpectedShutdown(ex, 7, "crash"), "; the hypervisor logged \"d7 crashed in a test\"");
}

TEST(HypervisorLogTest, KeepsTheLastLines) {
  std::string ring;
  for (int i = 0; i < 100; ++i) ring += "(XEN) d3v0 line " + std::to_string(i) + "\r\n";
  DomainLogExcerpt ex = ExcerptForDomain(ring, 3, 5);
  ASSERT_EQ(ex.lines.size(), 5u);
  EXPECT_EQ(ex.lines.front(), "d3v0 line 95");
  EXPECT_EQ(ex.lines.back(), "d3v0 line 99");  // no '\r'
  EXPECT_EQ(ExplainUnexpectedShutdown(ex, 3, "poweroff"), "; the hypervisor's last line about d3: \"d3v0 line 99\"");
}

TEST(HypervisorLogTest, SilentLogSaysWhyItMayBe) {
  DomainLogExcerpt ex = ExcerptForDomain("", 4);
  EXPECT_TRUE(ex.lines.empty());
  std::string why = ExplainUnexpectedShutdown(ex, 4, "reboot");
  EXPECT_NE(why.find("says nothing about d4"), std::string::npos) << why;
  EXPECT_NE(why.find("guest_loglvl"), std::string::npos) << why;
  EXPECT_NE(why.find("triple-faults is reported as a reboot"), std::string::npos) << why;
  EXPECT_EQ(ExplainUnexpectedShutdown(ex, 4, "poweroff").find("reported as a reboot"), std::string::npos);
  EXPECT_EQ(ExplainUnexpectedShutdown(ex, 4, ""), "");  // a domain that went away
}

}  // namespace
}  // namespace romulus::xen
