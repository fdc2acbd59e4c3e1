// A development PKI for `tollgate-cloud init`: a self-signed CA and a server
// certificate it issues (ECDSA P-256, SHA-256). Production passes its own
// certificate and key to `serve`; this exists so tests and demos run real TLS
// with verification on, never with it switched off.
#pragma once

#include <string>
#include <vector>

namespace tollgate::cloud {

struct DevPki {
  std::string ca_cert_pem;
  std::string ca_key_pem;  // PKCS#8; keep it to issue more server certificates
  std::string server_cert_pem;
  std::string server_key_pem;  // PKCS#8
};

// `dns_names` and `ip_addresses` become the server certificate's subjectAltName
// (clients verify against it); the first DNS name is also its CN. Valid from
// one hour ago (clock skew) for `days`. Throws std::runtime_error naming the
// OpenSSL call that failed.
DevPki make_dev_pki(const std::vector<std::string>& dns_names,
                    const std::vector<std::string>& ip_addresses, int days);

}  // namespace tollgate::cloud
