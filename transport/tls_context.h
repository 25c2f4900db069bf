// Internal to transport/: what SecurityContext holds for the TLS modes.
#pragma once

#include <openssl/ssl.h>

#include <array>
#include <string>

#include "transport/security.h"

struct romulus::transport::SecurityContext::Impl {
  SSL_CTX* client = nullptr;
  SSL_CTX* server = nullptr;
  // PSK mode: derived TLS PSK and the identity that names it.
  std::array<uint8_t, 32> psk{};
  std::string identity;
  bool psk_mode = false;
  ~Impl();
};
