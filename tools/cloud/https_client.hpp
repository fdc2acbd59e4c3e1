// A small blocking HTTPS client for the authority's API (tests, the operator
// and, later, the host's online side). Verifies the server certificate against
// the given CA and host name; keeps the connection alive between requests and
// reconnects when the server closed it. Every request has a deadline.
//
// Beast lives only in https_client.cpp. Not thread-safe: one client per thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace tollgate::cloud {

struct HttpsClientOptions {
  std::string host = "127.0.0.1";  // where to connect
  std::uint16_t port = 8443;
  std::string server_name = "localhost";  // SNI and the name the certificate must carry
  std::string ca_pem;                     // trust anchor (PEM)
  std::chrono::milliseconds timeout{10000};
};

struct HttpReply {
  int status = 0;
  std::string body;
};

class HttpsClient {
 public:
  explicit HttpsClient(HttpsClientOptions options);
  ~HttpsClient();
  HttpsClient(const HttpsClient&) = delete;
  HttpsClient& operator=(const HttpsClient&) = delete;

  // Sends one request. `bearer` non-empty adds "Authorization: Bearer <bearer>";
  // a body is sent as application/json unless `headers` sets Content-Type.
  // Throws std::runtime_error on a connection, TLS or timeout failure.
  HttpReply request(const std::string& method, const std::string& target,
                    const std::string& body = {}, const std::string& bearer = {},
                    const std::vector<std::pair<std::string, std::string>>& headers = {});

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tollgate::cloud
