#include "transport/security.h"

#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/evp.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include <spdlog/spdlog.h>

#include "transport/tls_context.h"

namespace romulus::transport {

SecurityContext::Impl::~Impl() {
  if (client) SSL_CTX_free(client);
  if (server) SSL_CTX_free(server);
  OPENSSL_cleanse(psk.data(), psk.size());
}

namespace {

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string ToHex(const uint8_t* p, size_t n) {
  static const char* kDigits = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < n; ++i) {
    s += kDigits[p[i] >> 4];
    s += kDigits[p[i] & 15];
  }
  return s;
}

std::array<uint8_t, 32> Sha256Labeled(const char* label, const std::vector<uint8_t>& key) {
  std::vector<uint8_t> msg(label, label + std::strlen(label));
  msg.insert(msg.end(), key.begin(), key.end());
  std::array<uint8_t, 32> out{};
  unsigned int len = 0;
  EVP_Digest(msg.data(), msg.size(), out.data(), &len, EVP_sha256(), nullptr);
  OPENSSL_cleanse(msg.data(), msg.size());
  return out;
}

std::string OpenSslError() {
  unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return "unknown OpenSSL error";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  return buf;
}

Status CheckReadable(const std::string& what, const std::string& path) {
  if (path.empty()) return Status::InvalidArgument(what + " file not given");
  if (::access(path.c_str(), R_OK) != 0) {
    return Status::InvalidArgument(what + " file '" + path + "': " + std::strerror(errno));
  }
  return Status::Ok();
}

// A secret must be private to the user running romulus: owned by that user
// (anyone else who owns it can rewrite or read it whatever its mode says)
// and inaccessible to others. Group access is only warned about, for
// deployments that share keys through a dedicated group.
Status CheckPrivateKeyFile(const std::string& what, const std::string& path, const struct stat& st) {
  const uid_t me = ::geteuid();
  if (st.st_uid != me) {
    return Status::InvalidArgument(what + " '" + path + "' is owned by uid " +
                                   std::to_string(st.st_uid) + ", expected uid " +
                                   std::to_string(me) + " (the user running romulus); run: chown " +
                                   std::to_string(me) + " " + path);
  }
  if (st.st_mode & (S_IROTH | S_IWOTH)) {
    return Status::InvalidArgument(what + " '" + path +
                                   "' is accessible by other users; run: chmod 600 " + path);
  }
  if (st.st_mode & (S_IRGRP | S_IWGRP)) {
    spdlog::warn("{} '{}' is group-accessible; consider: chmod 600 {}", what, path, path);
  }
  return Status::Ok();
}

// ---- PSK callbacks (TLS 1.3 external PSK) -------------------------------------

const unsigned char kAes128GcmSha256[2] = {0x13, 0x01};

SSL_SESSION* NewPskSession(SSL* ssl, const SecurityContext::Impl* impl) {
  const SSL_CIPHER* cipher = SSL_CIPHER_find(ssl, kAes128GcmSha256);
  if (!cipher) return nullptr;
  SSL_SESSION* s = SSL_SESSION_new();
  if (!s) return nullptr;
  if (!SSL_SESSION_set1_master_key(s, impl->psk.data(), impl->psk.size()) ||
      !SSL_SESSION_set_cipher(s, cipher) ||
      !SSL_SESSION_set_protocol_version(s, TLS1_3_VERSION)) {
    SSL_SESSION_free(s);
    return nullptr;
  }
  return s;
}

int PskUseSession(SSL* ssl, const EVP_MD* md, const unsigned char** id, size_t* idlen,
                  SSL_SESSION** sess) {
  auto* impl = static_cast<const SecurityContext::Impl*>(SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)));
  SSL_SESSION* s = NewPskSession(ssl, impl);
  if (!s) return 0;
  // On a HelloRetryRequest OpenSSL asks again with the chosen suite's hash;
  // our PSK is SHA-256 only.
  if (md && md != SSL_CIPHER_get_handshake_digest(SSL_SESSION_get0_cipher(s))) {
    SSL_SESSION_free(s);
    *sess = nullptr;
    return 1;
  }
  *id = reinterpret_cast<const unsigned char*>(impl->identity.data());
  *idlen = impl->identity.size();
  *sess = s;
  return 1;
}

int PskFindSession(SSL* ssl, const unsigned char* id, size_t idlen, SSL_SESSION** sess) {
  auto* impl = static_cast<const SecurityContext::Impl*>(SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)));
  std::string got(reinterpret_cast<const char*>(id), idlen);
  if (got != impl->identity) {
    std::string printable;
    for (char c : got.substr(0, 64)) printable += (c >= 0x20 && c < 0x7f) ? c : '?';
    // Let the handshake's error say why, instead of OpenSSL's generic
    // "no suitable signature algorithm". Whoever runs the handshake logs it
    // (the listener rate-limited: anyone can send a ClientHello).
    std::string why = "peer uses a different pre-shared key (peer key id '" + printable +
                      "', ours '" + impl->identity + "')";
    if (auto* note = static_cast<std::string*>(SSL_get_app_data(ssl))) {
      *note = why;
    } else {
      spdlog::warn("TLS: {}", why);
    }
    *sess = nullptr;  // no PSK match: the handshake fails (there is no certificate)
    return 1;
  }
  *sess = NewPskSession(ssl, impl);
  return *sess ? 1 : 0;
}

// Common TLS 1.3-only settings for both roles.
Status Configure(SSL_CTX* ctx) {
  if (!SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) ||
      !SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION)) {
    return Status::Internal("cannot restrict TLS to 1.3: " + OpenSslError());
  }
  // Every connection does a full handshake and no post-handshake message is
  // ever sent (PROTOCOL.md §1.2).
  SSL_CTX_set_num_tickets(ctx, 0);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET | SSL_OP_NO_RENEGOTIATION);
  return Status::Ok();
}

}  // namespace

const char* ModeName(Security::Mode mode) {
  switch (mode) {
    case Security::Mode::kPsk: return "tls-psk";
    case Security::Mode::kCertificate: return "tls-cert";
    case Security::Mode::kInsecure: return "insecure";
  }
  return "unknown";
}

Result<std::vector<uint8_t>> LoadPskFile(const std::string& path) {
  if (path.empty()) {
    return Status::InvalidArgument(
        "no pre-shared key file given (create one with: openssl rand -hex 32 > romulus.key && "
        "chmod 600 romulus.key)");
  }
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::InvalidArgument("key file '" + path + "': " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return Status::InvalidArgument("key file '" + path + "' is not a regular file");
  }
  if (Status priv = CheckPrivateKeyFile("key file", path, st); !priv.ok()) {
    ::close(fd);
    return priv;
  }
  // Bounded read: a key file is small; anything big is not a key file.
  constexpr size_t kMaxFile = 16384;
  std::string text(kMaxFile + 1, '\0');
  size_t len = 0;
  for (;;) {
    ssize_t n = ::read(fd, text.data() + len, text.size() - len);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      ::close(fd);
      return Status::InvalidArgument("reading key file '" + path + "': " + std::strerror(errno));
    }
    if (n == 0) break;
    len += static_cast<size_t>(n);
    if (len > kMaxFile) break;
  }
  ::close(fd);
  if (len > kMaxFile) return Status::InvalidArgument("key file '" + path + "' is too large");
  text.resize(len);

  std::string hex;
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    size_t a = line.find_first_not_of(" \t\r");
    if (a == std::string::npos || line[a] == '#') continue;
    size_t b = line.find_last_not_of(" \t\r");
    if (!hex.empty()) {
      return Status::InvalidArgument("key file '" + path +
                                     "' has more than one key line (expected one line of hex)");
    }
    hex = line.substr(a, b - a + 1);
  }
  OPENSSL_cleanse(text.data(), text.size());
  if (hex.empty()) return Status::InvalidArgument("key file '" + path + "' contains no key");
  if (hex.size() % 2 != 0) {
    return Status::InvalidArgument("key file '" + path + "' has an odd number of hex digits");
  }
  std::vector<uint8_t> key(hex.size() / 2);
  for (size_t i = 0; i < key.size(); ++i) {
    int hi = HexValue(hex[2 * i]), lo = HexValue(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) {
      OPENSSL_cleanse(hex.data(), hex.size());
      return Status::InvalidArgument("key file '" + path + "' is not hexadecimal");
    }
    key[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  OPENSSL_cleanse(hex.data(), hex.size());
  if (key.size() < kMinPskBytes) {
    return Status::InvalidArgument("key in '" + path + "' is " + std::to_string(key.size()) +
                                   " bytes; at least " + std::to_string(kMinPskBytes) +
                                   " are required (openssl rand -hex 32)");
  }
  if (key.size() > kMaxPskBytes) {
    return Status::InvalidArgument("key in '" + path + "' is longer than " +
                                   std::to_string(kMaxPskBytes) + " bytes");
  }
  return key;
}

Status WritePskFile(const std::string& path) {
  uint8_t key[32];
  if (RAND_bytes(key, sizeof key) != 1) return Status::Internal("RAND_bytes failed");
  std::string text = "# romulus pre-shared key (keep this file mode 0600)\n" +
                     ToHex(key, sizeof key) + "\n";
  OPENSSL_cleanse(key, sizeof key);
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return Status::FromErrno("creating key file '" + path + "'", errno);
  size_t done = 0;
  while (done < text.size()) {
    ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      ::close(fd);
      ::unlink(path.c_str());
      return Status::FromErrno("writing key file '" + path + "'", err);
    }
    done += static_cast<size_t>(n);
  }
  OPENSSL_cleanse(text.data(), text.size());
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    return Status::FromErrno("writing key file '" + path + "'", errno);
  }
  return Status::Ok();
}

SecurityContext::SecurityContext(Security config, std::unique_ptr<Impl> impl, std::string key_id)
    : config_(std::move(config)), impl_(std::move(impl)), key_id_(std::move(key_id)) {}

SecurityContext::~SecurityContext() = default;

Result<std::shared_ptr<SecurityContext>> SecurityContext::Load(const Security& config) {
  if (config.mode == Security::Mode::kInsecure) {
    return std::shared_ptr<SecurityContext>(new SecurityContext(config, nullptr, ""));
  }
  auto impl = std::make_unique<Impl>();
  impl->client = SSL_CTX_new(TLS_client_method());
  impl->server = SSL_CTX_new(TLS_server_method());
  if (!impl->client || !impl->server) return Status::Internal("SSL_CTX_new: " + OpenSslError());
  for (SSL_CTX* ctx : {impl->client, impl->server}) {
    ROMULUS_RETURN_IF_ERROR(Configure(ctx));
    SSL_CTX_set_app_data(ctx, impl.get());
  }
  std::string key_id;
  if (config.mode == Security::Mode::kPsk) {
    auto key = LoadPskFile(config.psk_file);
    if (!key.ok()) return key.status();
    impl->psk = Sha256Labeled("romulus-psk-v1", *key);
    auto id = Sha256Labeled("romulus-psk-id-v1", *key);
    OPENSSL_cleanse(key->data(), key->size());
    key_id = ToHex(id.data(), 8);
    impl->identity = "romulus-psk:" + key_id;
    impl->psk_mode = true;
    for (SSL_CTX* ctx : {impl->client, impl->server}) {
      // SHA-256 suites only: the PSK is bound to SHA-256.
      if (!SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256")) {
        return Status::Internal("SSL_CTX_set_ciphersuites: " + OpenSslError());
      }
    }
    SSL_CTX_set_psk_use_session_callback(impl->client, PskUseSession);
    SSL_CTX_set_psk_find_session_callback(impl->server, PskFindSession);
    // The client must never accept a certificate-authenticated server in
    // PSK mode: with an empty trust store any certificate fails to verify,
    // and the handshake code also insists the PSK was used.
    SSL_CTX_set_verify(impl->client, SSL_VERIFY_PEER, nullptr);
  } else {
    ROMULUS_RETURN_IF_ERROR(CheckReadable("certificate", config.cert_file));
    ROMULUS_RETURN_IF_ERROR(CheckReadable("private key", config.key_file));
    ROMULUS_RETURN_IF_ERROR(CheckReadable("CA", config.ca_file));
    struct stat st {};
    if (::stat(config.key_file.c_str(), &st) != 0) {
      return Status::InvalidArgument("private key file '" + config.key_file +
                                     "': " + std::strerror(errno));
    }
    ROMULUS_RETURN_IF_ERROR(CheckPrivateKeyFile("private key file", config.key_file, st));
    for (SSL_CTX* ctx : {impl->client, impl->server}) {
      if (SSL_CTX_use_certificate_chain_file(ctx, config.cert_file.c_str()) != 1) {
        return Status::InvalidArgument("certificate file '" + config.cert_file +
                                       "': " + OpenSslError());
      }
      if (SSL_CTX_use_PrivateKey_file(ctx, config.key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
        return Status::InvalidArgument("private key file '" + config.key_file +
                                       "': " + OpenSslError());
      }
      if (SSL_CTX_check_private_key(ctx) != 1) {
        return Status::InvalidArgument("private key '" + config.key_file +
                                       "' does not match certificate '" + config.cert_file + "'");
      }
      if (SSL_CTX_load_verify_locations(ctx, config.ca_file.c_str(), nullptr) != 1) {
        return Status::InvalidArgument("CA file '" + config.ca_file + "': " + OpenSslError());
      }
      SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
      if (!config.peer_name.empty()) {
        X509_VERIFY_PARAM* param = SSL_CTX_get0_param(ctx);
        // An IP literal is matched against IP SANs, anything else as a DNS name.
        if (X509_VERIFY_PARAM_set1_ip_asc(param, config.peer_name.c_str()) != 1) {
          ERR_clear_error();
          if (X509_VERIFY_PARAM_set1_host(param, config.peer_name.c_str(), 0) != 1) {
            return Status::InvalidArgument("bad peer name '" + config.peer_name + "'");
          }
        }
      }
    }
  }
  return std::shared_ptr<SecurityContext>(new SecurityContext(config, std::move(impl), key_id));
}

}  // namespace romulus::transport
