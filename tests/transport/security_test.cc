#include "transport/security.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "test_util.h"
#include "transport/tcp.h"

namespace romulus::transport {
namespace {

using testing::TempDir;
using testing::WriteFile;

const std::string kHex64 = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";

TEST(PskFile, LoadsHexWithCommentsAndWhitespace) {
  TempDir d;
  auto path = WriteFile(d.File("k"), "# a comment\n\n   " + kHex64 + "  \r\n# trailing\n");
  auto key = LoadPskFile(path);
  ASSERT_TRUE(key.ok()) << key.status().ToString();
  ASSERT_EQ(key->size(), 32u);
  EXPECT_EQ((*key)[0], 0x00);
  EXPECT_EQ((*key)[1], 0x11);
  EXPECT_EQ((*key)[31], 0xff);
}

TEST(PskFile, RejectsBadFiles) {
  TempDir d;
  struct Case {
    const char* name;
    std::string text;
    mode_t mode;
    const char* expect;
  } cases[] = {
      {"short", kHex64.substr(0, 62) + "\n", 0600, "at least 32"},
      {"odd", kHex64 + "a\n", 0600, "odd"},
      {"nonhex", "zz" + kHex64.substr(2) + "\n", 0600, "not hexadecimal"},
      {"empty", "# nothing\n", 0600, "no key"},
      {"two lines", kHex64 + "\n" + kHex64 + "\n", 0600, "more than one"},
      {"world readable", kHex64 + "\n", 0604, "chmod 600"},
      {"world writable", kHex64 + "\n", 0602, "chmod 600"},
      {"too long", std::string(2 * 1025, 'a') + "\n", 0600, "longer than"},
  };
  for (const auto& c : cases) {
    auto path = WriteFile(d.File(c.name), c.text, c.mode);
    auto key = LoadPskFile(path);
    ASSERT_FALSE(key.ok()) << c.name;
    EXPECT_EQ(key.status().code(), Code::kInvalidArgument) << c.name;
    EXPECT_NE(key.status().message().find(c.expect), std::string::npos)
        << c.name << ": " << key.status().ToString();
  }
  EXPECT_FALSE(LoadPskFile(d.File("missing")).ok());
  EXPECT_FALSE(LoadPskFile("").ok());
  EXPECT_FALSE(LoadPskFile(d.path()).ok());  // a directory
}

// Tests run as root; a file handed to another user (nobody) must be refused
// even though root can read it.
TEST(PskFile, KeyOwnedByAnotherUserIsRefused) {
  TempDir d;
  auto path = WriteFile(d.File("k"), kHex64 + "\n");
  if (::chown(path.c_str(), 65534, static_cast<gid_t>(-1)) != 0) {
    GTEST_SKIP() << "cannot chown (not root): " << std::strerror(errno);
  }
  auto key = LoadPskFile(path);
  ASSERT_FALSE(key.ok());
  EXPECT_EQ(key.status().code(), Code::kInvalidArgument);
  const std::string me = std::to_string(::geteuid());
  EXPECT_NE(key.status().message().find("owned by uid 65534, expected uid " + me), std::string::npos)
      << key.status().ToString();
  EXPECT_NE(key.status().message().find("chown " + me), std::string::npos) << key.status().ToString();
  Security s;
  s.psk_file = path;
  EXPECT_EQ(SecurityContext::Load(s).status().code(), Code::kInvalidArgument);
  // Given back to us, the same file loads.
  ASSERT_EQ(0, ::chown(path.c_str(), ::geteuid(), static_cast<gid_t>(-1)));
  EXPECT_TRUE(LoadPskFile(path).ok());
}

TEST(PskFile, GroupReadableIsAcceptedWithAWarning) {
  TempDir d;
  auto path = WriteFile(d.File("k"), kHex64 + "\n", 0640);
  EXPECT_TRUE(LoadPskFile(path).ok());
}

TEST(PskFile, WritePskFileCreatesPrivateLoadableKey) {
  TempDir d;
  std::string path = d.File("new.key");
  ASSERT_TRUE(WritePskFile(path).ok());
  struct stat st {};
  ASSERT_EQ(0, ::stat(path.c_str(), &st));
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto key = LoadPskFile(path);
  ASSERT_TRUE(key.ok()) << key.status().ToString();
  EXPECT_EQ(key->size(), 32u);
  EXPECT_FALSE(WritePskFile(path).ok());  // never overwrites
  std::string other = d.File("other.key");
  ASSERT_TRUE(WritePskFile(other).ok());
  EXPECT_NE(*LoadPskFile(other), *key);
}

TEST(SecurityContext, KeyIdIsAStableFingerprint) {
  TempDir d;
  auto a = testing::LoadOrDie(testing::PskConfig(WriteFile(d.File("a"), kHex64 + "\n")));
  auto b = testing::LoadOrDie(testing::PskConfig(WriteFile(d.File("b"), "# same key\n" + kHex64)));
  ASSERT_TRUE(a && b);
  EXPECT_EQ(a->key_id().size(), 16u);
  EXPECT_EQ(a->key_id(), b->key_id());
  EXPECT_EQ(std::string(ModeName(a->mode())), "tls-psk");
}

TEST(SecurityContext, CertificateModeValidatesFiles) {
  TempDir d;
  Security s;
  s.mode = Security::Mode::kCertificate;
  s.cert_file = d.File("nope.pem");
  s.key_file = d.File("nope.key");
  s.ca_file = d.File("ca.pem");
  auto ctx = SecurityContext::Load(s);
  ASSERT_FALSE(ctx.ok());
  EXPECT_NE(ctx.status().message().find("certificate file"), std::string::npos);
  WriteFile(s.cert_file, "not a certificate\n");
  WriteFile(s.key_file, "not a key\n");
  WriteFile(s.ca_file, "not a CA\n");
  ctx = SecurityContext::Load(s);
  ASSERT_FALSE(ctx.ok());
  EXPECT_EQ(ctx.status().code(), Code::kInvalidArgument);
}

TEST(HostPort, Parses) {
  auto hp = ParseHostPort("10.0.0.2:7000");
  ASSERT_TRUE(hp.ok());
  EXPECT_EQ(hp->host, "10.0.0.2");
  EXPECT_EQ(hp->port, 7000);
  hp = ParseHostPort("[::1]:80");
  ASSERT_TRUE(hp.ok());
  EXPECT_EQ(hp->host, "::1");
  hp = ParseHostPort(":9");
  ASSERT_TRUE(hp.ok());
  EXPECT_EQ(hp->host, "");
  hp = ParseHostPort("*:9");
  ASSERT_TRUE(hp.ok());
  EXPECT_EQ(hp->host, "");
  for (const char* bad : {"host", "host:", "host:99999", "::1:80", "[::1]80", "h:1x", "h:123456"}) {
    EXPECT_FALSE(ParseHostPort(bad).ok()) << bad;
  }
}

}  // namespace
}  // namespace romulus::transport
