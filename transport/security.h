// Channel security configuration and its loader. Files are read and checked
// once (clear errors naming the file and the fix) into a SecurityContext
// that Connect()/Listener share across reconnects.
//
// PSK file format (docs/PROTOCOL.md §1.3): one line of hex, >= 64 digits
// (32 bytes), '#' comments and blank lines ignored. Generate with
//   openssl rand -hex 32 > romulus.key && chmod 600 romulus.key
// Key files (the PSK file, the --key private key) must be owned by the user
// running romulus; world-readable/-writable ones are refused, group-readable
// ones warned about. (The listener's pre-authentication deadline is a
// ListenerOptions field, transport/tcp.h.)
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"

namespace romulus::transport {

struct Security {
  enum class Mode { kPsk, kCertificate, kInsecure };
  Mode mode = Mode::kPsk;
  std::string psk_file;   // kPsk
  std::string cert_file;  // kCertificate: our chain (PEM)
  std::string key_file;   // kCertificate: our private key (PEM)
  std::string ca_file;    // kCertificate: CA that signs the peer (PEM)
  std::string peer_name;  // kCertificate, optional: peer cert must match this DNS name / IP
};

const char* ModeName(Security::Mode mode);  // "tls-psk", "tls-cert", "insecure"

inline constexpr size_t kMinPskBytes = 32;
inline constexpr size_t kMaxPskBytes = 1024;

// Reads and validates a PSK file; returns the raw key bytes.
Result<std::vector<uint8_t>> LoadPskFile(const std::string& path);
// Writes a fresh 32-byte random key in the file format, mode 0600, refusing
// to overwrite an existing file (for `romulus keygen`).
Status WritePskFile(const std::string& path);

// Opaque: holds the OpenSSL SSL_CTX objects (client and server) for TLS
// modes, nothing for kInsecure.
class SecurityContext {
 public:
  static Result<std::shared_ptr<SecurityContext>> Load(const Security& config);
  ~SecurityContext();

  const Security& config() const { return config_; }
  Security::Mode mode() const { return config_.mode; }
  bool tls() const { return config_.mode != Security::Mode::kInsecure; }
  // Short public fingerprint of the PSK (the TLS identity suffix), "" otherwise.
  const std::string& key_id() const { return key_id_; }

  struct Impl;
  Impl* impl() const { return impl_.get(); }

 private:
  SecurityContext(Security config, std::unique_ptr<Impl> impl, std::string key_id);
  Security config_;
  std::unique_ptr<Impl> impl_;
  std::string key_id_;
};

}  // namespace romulus::transport
