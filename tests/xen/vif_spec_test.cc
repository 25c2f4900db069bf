// The vif lines of Romulus' domain-info record (xen/vif_spec.h): what the
// primary writes the backup reads back, and what a hostile or broken
// primary could send is refused before it reaches xenstore.
#include "xen/vif_spec.h"

#include <gtest/gtest.h>

#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace romulus::xen {
namespace {

std::map<std::string, std::string> ParseLines(const std::string& text) {
  std::map<std::string, std::string> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    auto eq = line.find('=');
    if (eq != std::string::npos) out[line.substr(0, eq)] = line.substr(eq + 1);
  }
  return out;
}

TEST(VifSpecTest, RoundTripsInDevidOrder) {
  std::vector<VifSpec> vifs = {{0, "00:16:3e:4c:00:03", "xenbr0"}, {2, "00:16:3E:AA:bb:0c", ""},
                               {10, "00:16:3e:00:00:10", "br-lab.1"}};
  auto lines = VifInfoLines(vifs);
  ASSERT_TRUE(lines.ok()) << lines.status().ToString();
  EXPECT_NE(lines->find("vif.0=00:16:3e:4c:00:03 xenbr0\n"), std::string::npos) << *lines;
  EXPECT_NE(lines->find("vif.2=00:16:3e:aa:bb:0c\n"), std::string::npos) << "macs are lower-cased: " << *lines;
  auto info = ParseLines("name=g\nuuid=x\n" + *lines + "hvm=0\n");
  auto back = VifSpecsFromInfo(info);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  vifs[1].mac = "00:16:3e:aa:bb:0c";
  EXPECT_EQ(*back, vifs);  // 10 after 2, although "vif.10" sorts before "vif.2"
}

// xl's vifname= travels on a line of its own (an older backup ignores it).
TEST(VifSpecTest, AVifnameTravelsWithItsVif) {
  std::vector<VifSpec> vifs = {{0, "00:16:3e:4c:00:03", "xenbr0", "web-0"}, {1, "00:16:3e:4c:00:04", "", ""}};
  auto lines = VifInfoLines(vifs);
  ASSERT_TRUE(lines.ok()) << lines.status().ToString();
  EXPECT_NE(lines->find("vif.0=00:16:3e:4c:00:03 xenbr0\nvifname.0=web-0\n"), std::string::npos) << *lines;
  EXPECT_EQ(lines->find("vifname.1"), std::string::npos) << "no line for the default name: " << *lines;
  auto back = VifSpecsFromInfo(ParseLines(*lines));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(*back, vifs);
}

TEST(VifSpecTest, RefusesABadOrOrphanVifname) {
  for (const char* bad : {"vif.0=00:16:3e:4c:00:03\nvifname.0=eth0;reboot\n",
                          "vif.0=00:16:3e:4c:00:03\nvifname.0=\n",
                          "vif.0=00:16:3e:4c:00:03\nvifname.0=a-name-far-too-long\n",
                          "vif.0=00:16:3e:4c:00:03\nvifname.1=web-1\n", "vifname.0=web-0\n"}) {
    auto r = VifSpecsFromInfo(ParseLines(bad));
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), Code::kCorruption) << bad;
  }
  EXPECT_FALSE(VifInfoLines({{0, "00:16:3e:4c:00:03", "", "bad name"}}).ok()) << "never sent";
}

TEST(VifSpecTest, NoVifsIsEmpty) {
  auto back = VifSpecsFromInfo(ParseLines("name=g\nvifs=3\nvi=1\n"));
  ASSERT_TRUE(back.ok());
  EXPECT_TRUE(back->empty());
}

TEST(VifSpecTest, RefusesBadEntries) {
  for (const char* bad : {"vif.0=00:16:3e:4c:00\n", "vif.0=00:16:3e:4c:00:0g\n", "vif.0=00-16-3e-4c-00-03\n",
                          "vif.x=00:16:3e:4c:00:03\n", "vif.=00:16:3e:4c:00:03\n", "vif.256=00:16:3e:4c:00:03\n",
                          "vif.0=00:16:3e:4c:00:03 br;rm -rf\n", "vif.0=00:16:3e:4c:00:03 \n",
                          "vif.0=00:16:3e:4c:00:03 a-bridge-name-too-long\n", "vif.0=\n"}) {
    auto r = VifSpecsFromInfo(ParseLines(bad));
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), Code::kCorruption) << bad;
  }
  std::string many;
  for (int i = 0; i <= int(kMaxVifs); ++i) many += "vif." + std::to_string(i) + "=00:16:3e:00:00:01\n";
  EXPECT_FALSE(VifSpecsFromInfo(ParseLines(many)).ok());
}

TEST(VifSpecTest, WriterRefusesWhatTheReaderWould) {
  EXPECT_FALSE(VifInfoLines({{0, "not-a-mac", ""}}).ok());
  EXPECT_FALSE(VifInfoLines({{0, "00:16:3e:4c:00:03", "bad bridge"}}).ok());
  EXPECT_FALSE(VifInfoLines({{kMaxVifDevid + 1, "00:16:3e:4c:00:03", ""}}).ok());
  EXPECT_FALSE(VifInfoLines(std::vector<VifSpec>(kMaxVifs + 1, {0, "00:16:3e:4c:00:03", ""})).ok());
  EXPECT_TRUE(VifInfoLines({}).ok());
}

// Output commit is all or nothing: with --netbuf-vif given, every interface
// the guest sends on must be buffered (a guest without PV drivers sends on
// its emulated NIC's tap, not on the vif beside it).
std::vector<std::string> Names(const std::vector<GuestInterface>& g) {
  std::vector<std::string> out;
  for (const auto& i : g) out.push_back(i.name);
  return out;
}

std::vector<GuestInterface> InDom0(const std::vector<std::string>& names) {
  std::vector<GuestInterface> out;
  for (const auto& n : names) out.push_back(GuestInterface{n, 0});
  return out;
}

TEST(GuestInterfaces, EveryVifAndEmulatedNicTap) {
  const std::vector<VifPlace> vifs = {{0, "", 0}, {2, "", 0}};
  EXPECT_EQ(Names(GuestInterfaces(7, vifs, {"vif7.0-emu"})), (std::vector<std::string>{"vif7.0", "vif7.2", "vif7.0-emu"}));
  EXPECT_TRUE(GuestInterfaces(7, {}, {}).empty());
}

// xl's vifname=: the hotplug script renames the vif to it, and the device
// model's tap (started as vif7.0-emu) to vifname-emu (vif-common.sh).
TEST(GuestInterfaces, AVifnameNamesTheInterface) {
  const std::vector<VifPlace> vifs = {{0, "web0", 0}, {1, "", 0}, {2, "far", 3}};
  EXPECT_EQ(EmulatedNicInterface("vif7.0-emu", 0, vifs), "web0-emu");
  EXPECT_EQ(EmulatedNicInterface("vif7.1-emu", 1, vifs), "vif7.1-emu");
  EXPECT_EQ(EmulatedNicInterface("vif7.2-emu", 2, vifs), "vif7.2-emu") << "a driver domain's vifname is not dom0's";
  EXPECT_EQ(EmulatedNicInterface("vif7.5-emu", 5, vifs), "vif7.5-emu");
  const auto g = GuestInterfaces(7, {vifs[0], vifs[1]}, {EmulatedNicInterface("vif7.0-emu", 0, vifs)});
  EXPECT_EQ(Names(g), (std::vector<std::string>{"web0", "vif7.1", "web0-emu"}));
  EXPECT_TRUE(CheckEveryInterfaceBuffered(g, {"web0", "web0-emu", "vif7.1"}).ok());
  Status s = CheckEveryInterfaceBuffered(g, {"vif7.0", "vif7.0-emu", "vif7.1"});
  EXPECT_EQ(s.code(), Code::kInvalidArgument);
  EXPECT_NE(s.message().find("add --netbuf-vif web0"), std::string::npos) << s.ToString();
}

// A vif served by a driver domain's netback never passes dom0's plugs: with
// buffering on, refused whatever is buffered; with it off, nothing to check.
TEST(GuestInterfaces, AVifServedByAnotherDomainCannotBeBuffered) {
  const std::vector<VifPlace> vifs = {{0, "", 0}, {1, "ignored", 3}};
  const auto g = GuestInterfaces(7, vifs, {});
  EXPECT_EQ(g[1], (GuestInterface{"vif7.1", 3}));
  EXPECT_TRUE(CheckEveryInterfaceBuffered(g, {}).ok());
  Status s = CheckEveryInterfaceBuffered(g, {"vif7.0", "vif7.1"});
  EXPECT_EQ(s.code(), Code::kInvalidArgument);
  EXPECT_NE(s.message().find("netback runs in domain 3"), std::string::npos) << s.ToString();
}

// Which domain serves a vif: only from the exact backend path libxl records
// in dom0's /libxl tree (the guest's own frontend nodes are not read).
TEST(GuestInterfaces, TheBackendDomainIsReadFromLibxlsPathOnly) {
  EXPECT_EQ(VifBackendDomain("/local/domain/0/backend/vif/7/0", 7, 0), std::optional<uint32_t>(0));
  EXPECT_EQ(VifBackendDomain("/local/domain/3/backend/vif/7/1", 7, 1), std::optional<uint32_t>(3));
  for (const char* bad : {"", "/local/domain/0/backend/vif/7/1", "/local/domain/0/backend/vif/8/0",
                          "/local/domain//backend/vif/7/0", "/local/domain/x/backend/vif/7/0",
                          "/local/domain/00/backend/vif/7/0", "/local/domain/32752/backend/vif/7/0",
                          "/local/domain/0/backend/vbd/7/0", "local/domain/0/backend/vif/7/0",
                          "/local/domain/0/../1/backend/vif/7/0", "/local/domain/123456/backend/vif/7/0"}) {
    EXPECT_EQ(VifBackendDomain(bad, 7, 0), std::nullopt) << bad;
  }
  // Unknown is refused when buffering, as a driver domain's is.
  Status s = CheckEveryInterfaceBuffered(GuestInterfaces(7, {{0, "", kUnknownBackendDomain}}, {}), {"vif7.0"});
  EXPECT_EQ(s.code(), Code::kInvalidArgument);
  EXPECT_NE(s.message().find("does not name"), std::string::npos) << s.ToString();
}

TEST(GuestInterfaces, BufferingSomeButNotAllIsRefused) {
  const std::vector<GuestInterface> guest = InDom0({"vif7.0", "vif7.0-emu"});
  EXPECT_TRUE(CheckEveryInterfaceBuffered(guest, {}).ok());  // off: warned about elsewhere
  EXPECT_TRUE(CheckEveryInterfaceBuffered(guest, {"vif7.0-emu", "vif7.0"}).ok());
  Status s = CheckEveryInterfaceBuffered(guest, {"vif7.0"});
  EXPECT_EQ(s.code(), Code::kInvalidArgument);
  EXPECT_NE(s.message().find("add --netbuf-vif vif7.0-emu"), std::string::npos) << s.ToString();
  EXPECT_EQ(CheckEveryInterfaceBuffered(guest, {"vif7.0-emu"}).code(), Code::kInvalidArgument);
  // An interface buffered that the guest does not have is the plug's own
  // business (it fails to install, naming it), not this check's.
  EXPECT_TRUE(CheckEveryInterfaceBuffered(InDom0({"vif7.0"}), {"vif7.0", "eth9"}).ok());
}

}  // namespace
}  // namespace romulus::xen
