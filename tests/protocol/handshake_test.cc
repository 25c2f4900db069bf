#include "protocol/handshake.h"

#include <gtest/gtest.h>

namespace romulus::protocol {
namespace {

Hello GoodHello() {
  Hello h;
  h.capabilities = kCapSimGuest | kCapLz4Pages;
  h.required = kCapSimGuest;
  h.cache_pages = 1024;
  h.guest_pages = 4096;
  h.session_id = 7;
  h.identity = "vm1";
  return h;
}

TEST(Handshake, AcceptsAndIntersectsCapabilities) {
  BackupPolicy p;
  p.supported_capabilities = kCapSimGuest | kCapXenStream;
  p.committed_epoch = 41;
  HelloAck a = Negotiate(GoodHello(), p);
  ASSERT_TRUE(a.accepted) << a.text;
  EXPECT_EQ(a.version, kProtocolVersion);
  EXPECT_EQ(a.capabilities, kCapSimGuest);
  EXPECT_EQ(a.session_id, 7u);
  EXPECT_EQ(a.backup_epoch, 41u);
  EXPECT_TRUE(CheckHelloAck(GoodHello(), a).ok());
}

// kCapCacheResize: offered and supported, the acceptance carries the
// backup's cache limit (0 = none becomes kNoCacheLimit on the wire).
TEST(Handshake, CacheResizeAgreementCarriesTheBackupsLimit) {
  Hello h = GoodHello();
  h.capabilities |= kCapCacheResize;
  BackupPolicy p;
  p.max_cache_pages = 5000;
  HelloAck a = Negotiate(h, p);
  ASSERT_TRUE(a.accepted) << a.text;
  EXPECT_TRUE(a.has_max_cache());
  EXPECT_EQ(a.max_cache_pages, 5000u);
  EXPECT_TRUE(CheckHelloAck(h, a).ok());
  p.max_cache_pages = 0;
  EXPECT_EQ(Negotiate(h, p).max_cache_pages, HelloAck::kNoCacheLimit);
  // An older backup (no such bit) does not agree: no limit is sent.
  p.supported_capabilities = kCapAllKnown & ~kCapCacheResize;
  EXPECT_FALSE(Negotiate(h, p).has_max_cache());
  // Nor when the primary did not offer it.
  p.supported_capabilities = kCapAllKnown;
  EXPECT_FALSE(Negotiate(GoodHello(), p).has_max_cache());
}

TEST(Handshake, PicksHighestCommonVersion) {
  Hello h = GoodHello();
  h.version_min = 1;
  h.version_max = 5;
  BackupPolicy p;
  p.version_min = 1;
  p.version_max = 3;
  HelloAck a = Negotiate(h, p);
  ASSERT_TRUE(a.accepted);
  EXPECT_EQ(a.version, 3);
  EXPECT_TRUE(CheckHelloAck(h, a).ok());
}

TEST(Handshake, Refusals) {
  struct Case {
    const char* name;
    void (*edit)(Hello&, BackupPolicy&);
    ErrorCode want;
  } cases[] = {
      {"version", [](Hello& h, BackupPolicy&) { h.version_min = h.version_max = 9; }, ErrorCode::kVersion},
      {"page size", [](Hello& h, BackupPolicy&) { h.page_size = 8192; }, ErrorCode::kGeometry},
      {"empty guest", [](Hello& h, BackupPolicy&) { h.guest_pages = 0; }, ErrorCode::kGeometry},
      {"capability", [](Hello& h, BackupPolicy& p) {
         h.capabilities |= kCapXenStream;
         h.required |= kCapXenStream;
         p.supported_capabilities = kCapSimGuest;
       }, ErrorCode::kCapabilities},
      {"guest too big", [](Hello&, BackupPolicy& p) { p.max_guest_pages = 100; }, ErrorCode::kResource},
      {"cache too big", [](Hello&, BackupPolicy& p) { p.max_cache_pages = 100; }, ErrorCode::kResource},
      {"identity", [](Hello&, BackupPolicy& p) { p.expected_identity = "vm2"; }, ErrorCode::kIdentity},
      {"busy", [](Hello&, BackupPolicy& p) { p.busy_with = "vm9"; }, ErrorCode::kBusy},
      {"heartbeat", [](Hello& h, BackupPolicy&) { h.heartbeat_ms = 1; }, ErrorCode::kProtocol},
      {"timeout", [](Hello& h, BackupPolicy&) { h.peer_timeout_ms = h.heartbeat_ms; }, ErrorCode::kProtocol},
      {"epoch 0", [](Hello& h, BackupPolicy&) { h.first_epoch = 0; }, ErrorCode::kProtocol},
  };
  for (const auto& c : cases) {
    Hello h = GoodHello();
    BackupPolicy p;
    c.edit(h, p);
    HelloAck a = Negotiate(h, p);
    EXPECT_FALSE(a.accepted) << c.name;
    EXPECT_EQ(a.error, c.want) << c.name << ": " << a.text;
    EXPECT_FALSE(a.text.empty()) << c.name;
    EXPECT_LE(a.text.size(), kMaxShortText);
    Status st = CheckHelloAck(h, a);
    EXPECT_EQ(st.code(), Code::kUnsupported) << c.name;
    // The refusal must itself be encodable.
    std::vector<uint8_t> buf;
    EXPECT_TRUE(a.EncodeTo(&buf).ok()) << c.name;
  }
}

TEST(Handshake, SameIdentityReplacesBusySession) {
  BackupPolicy p;
  p.busy_with = "vm1";
  EXPECT_TRUE(Negotiate(GoodHello(), p).accepted);
}

TEST(Handshake, PrimaryRejectsMalformedAcceptance) {
  Hello h = GoodHello();
  HelloAck a = Negotiate(h, BackupPolicy{});
  ASSERT_TRUE(a.accepted);

  HelloAck bad = a;
  bad.session_id = 8;
  EXPECT_EQ(CheckHelloAck(h, bad).code(), Code::kCorruption);
  bad = a;
  bad.version = 2;
  EXPECT_EQ(CheckHelloAck(h, bad).code(), Code::kCorruption);
  bad = a;
  bad.capabilities |= kCapXenStream;  // not offered
  EXPECT_EQ(CheckHelloAck(h, bad).code(), Code::kCorruption);
  bad = a;
  bad.capabilities &= ~kCapSimGuest;  // required but dropped
  EXPECT_EQ(CheckHelloAck(h, bad).code(), Code::kCorruption);
}

TEST(Handshake, AnOlderXenBackupRefusesANewerPrimary) {
  Hello h = GoodHello();
  h.capabilities |= kCapXenStream | kCapXenRelease;
  h.required |= kCapXenStream;
  h.xen_release = XenRelease(4, 20);
  BackupPolicy p;
  p.xen_release = XenRelease(4, 17);
  HelloAck a = Negotiate(h, p);
  EXPECT_FALSE(a.accepted);
  EXPECT_EQ(a.error, ErrorCode::kVersion);
  EXPECT_NE(a.text.find("Xen 4.20"), std::string::npos) << a.text;
  EXPECT_NE(a.text.find("Xen 4.17"), std::string::npos) << a.text;
  EXPECT_LE(a.text.size(), kMaxShortText);

  // The same release, or an older primary: accepted, the bit agreed.
  for (uint32_t primary : {XenRelease(4, 17), XenRelease(4, 16)}) {
    h.xen_release = primary;
    a = Negotiate(h, p);
    EXPECT_TRUE(a.accepted) << XenReleaseName(primary) << ": " << a.text;
    EXPECT_NE(a.capabilities & kCapXenRelease, 0u);
  }
  // 4.17 backup, 5.0 primary: the major counts first.
  h.xen_release = XenRelease(5, 0);
  EXPECT_FALSE(Negotiate(h, p).accepted);
  p.xen_release = XenRelease(4, 99);
  EXPECT_FALSE(Negotiate(h, p).accepted);
  // A backup that knows no release (not a Xen sink), or a primary that names
  // none (an older binary): nothing to compare, accepted as before.
  p.xen_release = 0;
  EXPECT_TRUE(Negotiate(h, p).accepted);
  p.xen_release = XenRelease(4, 17);
  h.capabilities &= ~kCapXenRelease;
  h.xen_release = 0;
  EXPECT_TRUE(Negotiate(h, p).accepted);
}

}  // namespace
}  // namespace romulus::protocol
