#include "cli/net_options.h"

namespace romulus::cli {

void AddSecurityOptions(po::options_description* desc) {
  desc->add_options()
      ("psk-file", po::value<std::string>(),
       "pre-shared key file for TLS 1.3 (make one: openssl rand -hex 32 > key; chmod 600 key)")
      ("cert", po::value<std::string>(), "TLS certificate chain (PEM) instead of a PSK")
      ("key", po::value<std::string>(), "private key for --cert (PEM)")
      ("ca", po::value<std::string>(), "CA that signs the peer's certificate (PEM)")
      ("peer-name", po::value<std::string>(), "with --cert: the peer certificate must name this host")
      ("insecure", po::bool_switch(), "plaintext TCP: NO authentication or encryption (labs only)");
}

std::shared_ptr<transport::SecurityContext> LoadSecurity(const std::string& command,
                                                         const po::variables_map& vm) {
  transport::Security sec;
  const bool insecure = vm["insecure"].as<bool>();
  const bool psk = vm.count("psk-file") > 0;
  const bool cert = vm.count("cert") || vm.count("key") || vm.count("ca");
  if (insecure + psk + cert != 1) {
    UsageError(command, insecure + psk + cert == 0
                            ? "the channel carries guest memory: give --psk-file FILE (or --cert/--key/--ca), "
                              "or --insecure to go without authentication and encryption"
                            : "choose one of --psk-file, --cert/--key/--ca and --insecure");
    return nullptr;
  }
  if (insecure) {
    sec.mode = transport::Security::Mode::kInsecure;
  } else if (psk) {
    sec.mode = transport::Security::Mode::kPsk;
    sec.psk_file = vm["psk-file"].as<std::string>();
  } else {
    if (!vm.count("cert") || !vm.count("key") || !vm.count("ca")) {
      UsageError(command, "certificate mode needs all of --cert, --key and --ca");
      return nullptr;
    }
    sec.mode = transport::Security::Mode::kCertificate;
    sec.cert_file = vm["cert"].as<std::string>();
    sec.key_file = vm["key"].as<std::string>();
    sec.ca_file = vm["ca"].as<std::string>();
    if (vm.count("peer-name")) sec.peer_name = vm["peer-name"].as<std::string>();
  }
  auto ctx = transport::SecurityContext::Load(sec);
  if (!ctx.ok()) {
    UsageError(command, ctx.status().message());
    return nullptr;
  }
  return *ctx;
}

bool ParsePeerAddress(const std::string& command, const std::string& flag, const std::string& text,
                      transport::HostPort* out) {
  auto hp = transport::ParseHostPort(text);
  if (!hp.ok()) {
    UsageError(command, "--" + flag + ": " + hp.status().message());
    return false;
  }
  if (hp->host.empty()) {
    UsageError(command, "--" + flag + ": '" + text + "' needs a host to connect to (HOST:PORT)");
    return false;
  }
  if (hp->port == 0) {
    UsageError(command, "--" + flag + ": '" + text + "' needs a non-zero port");
    return false;
  }
  *out = *hp;
  return true;
}

}  // namespace romulus::cli
