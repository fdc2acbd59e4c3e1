// The host's blocking client for the cloud's JSON API (docs/CLOUD.md), one
// HTTPS request per call on a fresh connection, each with a deadline.
//
// Unlike tools/cloud/https_client.hpp it never throws and sorts every failure
// into what the user can act on:
//   kUnreachable  no TCP connection, or no answer within the deadline, or a 5xx
//                 (the cloud is down or busy: work from the cache, retry later)
//   kRefused      a 4xx with the server's {"error": code, "message": text}
//   kGarbage      the peer spoke but not the API: TLS handshake or certificate
//                 failure, invalid HTTP, a body that is not a JSON object, an
//                 unexpected status, or (reported by callers) content that does
//                 not verify
// Beast lives only in cloud_client.cpp. Not thread-safe.
#pragma once

#include <boost/json/object.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <variant>

namespace tollgate::host {

struct CloudUrl {
  std::string host;
  std::uint16_t port = 443;
};
// "https://HOST[:PORT][/]" only: nullopt (with *error) for any other scheme, a
// path, query, fragment or user info.
std::optional<CloudUrl> parse_cloud_url(const std::string& url, std::string* error);

enum class CloudFailure { kUnreachable, kRefused, kGarbage };

struct CloudError {
  CloudFailure kind = CloudFailure::kGarbage;
  int status = 0;       // the HTTP status when there was one
  std::string code;     // the server's error code (kRefused), else ""
  std::string message;  // one line for the user
};

using CloudResult = std::variant<boost::json::object, CloudError>;

struct CloudClientOptions {
  CloudUrl url;
  std::string ca_pem;                       // trust anchor; empty: the system's default trust store
  std::chrono::milliseconds timeout{5000};  // each of connect, handshake, request
};

class CloudClient {
 public:
  explicit CloudClient(CloudClientOptions options);
  ~CloudClient();
  CloudClient(const CloudClient&) = delete;
  CloudClient& operator=(const CloudClient&) = delete;

  // `body` null: no body (GET). `bearer` non-empty adds the session header.
  // A 2xx answer whose body is a JSON object is the object; anything else is
  // a CloudError as described above.
  CloudResult call(const std::string& method, const std::string& target,
                   const boost::json::object* body = nullptr, const std::string& bearer = {});

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tollgate::host
