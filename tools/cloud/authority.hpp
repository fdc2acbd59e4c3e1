// The token authority's HTTP API, without HTTP: a request (method, target,
// bearer header, JSON body) goes in, a status and a JSON body come out. The
// Beast server (server.hpp) only moves bytes; everything docs/CLOUD.md
// specifies happens here, so it is tested without sockets as well as over TLS.
//
// Time is passed in (a clock function), so tests drive session expiry,
// challenge expiry and rate-limit windows by hand.
//
// Every failure is a specific 4xx (or 503 when storage failed) with the body
// {"error": "<code>", "message": "<one sentence>"} and changes no state.
// Thread-safe: the server calls handle() from several threads.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <semaphore>
#include <string>
#include <unordered_map>

#include "gateway/crypto.hpp"
#include "tools/cloud/password.hpp"
#include "tools/cloud/store.hpp"

namespace tollgate::cloud {

struct ApiRequest {
  std::string method;         // "GET", "POST", ...
  std::string target;         // "/v1/tokens" (a query string is ignored)
  std::string authorization;  // the Authorization header, "" if absent
  std::string content_type;   // the Content-Type header, "" if absent
  std::string body;
};

struct ApiResponse {
  int status = 200;
  std::string body;  // JSON
};

struct AuthorityOptions {
  UnixTime session_ttl = 3600;
  UnixTime challenge_ttl = 300;
  UnixTime token_validity = 7 * 86400;        // subscription and pay-per-use tokens
  UnixTime rent_unpaid_validity = 86400;      // rent-to-own while payments are due
  UnixTime rent_paid_validity = 365 * 86400;  // rent-to-own once paid in full
  std::uint32_t max_tokens_per_request = 16;
  std::uint32_t mint_requests_per_minute = 120;  // per user
  std::uint32_t login_failures_per_minute = 10;  // per user name, then 429
  Argon2Params argon2;
};

// The label before the enrollment proof's signed bytes, so the proof can never
// be confused with a signed Tollgate object (their labels are
// "tollgate.v1.<Message>\0"). Signing input:
//   label || challenge (32 bytes) || user id (16 bytes) || public key SPKI DER
inline constexpr std::string_view kEnrollmentLabel{"tollgate.cloud.v1.Enrollment\0", 29};
Bytes enrollment_signing_input(ByteView challenge, ByteView user_id, ByteView spki_der);

class Authority {
 public:
  using Clock = std::function<UnixTime()>;

  // `cloud_key` signs every token; it must be the key the stored authorization
  // vouches for (checked at each mint, 503 "no_authorization" otherwise).
  Authority(CloudStore& store, crypto::PrivateKey cloud_key, Clock clock,
            AuthorityOptions options = {});
  ~Authority();
  Authority(const Authority&) = delete;
  Authority& operator=(const Authority&) = delete;

  ApiResponse handle(const ApiRequest& request);

  const crypto::PublicKey& cloud_public_key() const { return cloud_key_.public_key(); }

 private:
  struct Context;
  struct ReadCache;
  struct SessionView;
  struct AuthorizationView;
  ApiResponse route(const ApiRequest& request);
  ApiResponse login(const Context& c);
  ApiResponse enroll_challenge(const Context& c);
  ApiResponse enroll(const Context& c);
  ApiResponse mint(const Context& c);
  ApiResponse get_authorization(const Context& c);
  ApiResponse get_device(const Context& c, const std::string& id);
  ApiResponse receipts(const Context& c);

  // Fixed one-minute windows keyed by a string; true while under `limit`
  // (and then counts this call when `count`).
  bool allow(std::map<std::string, std::pair<UnixTime, std::uint32_t>>& table,
             const std::string& key, std::uint32_t limit, UnixTime now, bool count);
  void count_failure(const std::string& user, UnixTime now);

  // Reads through the cache (see ReadCache in authority.cpp) under the
  // request's change_version; `load` runs on a miss and returns an optional
  // or a pointer, null meaning "absent" (never cached).
  template <class T, class Load>
  std::shared_ptr<const T> cached(std::unordered_map<std::string, std::shared_ptr<const T>>& table,
                                  const std::string& key, std::optional<std::uint64_t> version,
                                  Load load);
  std::shared_ptr<const SessionView> session_view(ByteView secret_hash,
                                                  std::optional<std::uint64_t> version);
  std::shared_ptr<const AuthorizationView> authorization_view(std::optional<std::uint64_t> version);

  CloudStore& store_;
  crypto::PrivateKey cloud_key_;
  Clock clock_;
  AuthorityOptions options_;
  std::string dummy_hash_;  // verified against for unknown users, so timing says nothing
  // Argon2 costs ~20 MiB and tens of ms per check; two at a time bounds memory under a flood.
  std::counting_semaphore<2> password_checks_{2};
  std::mutex limits_mu_;
  std::map<std::string, std::pair<UnixTime, std::uint32_t>> mint_window_;
  std::map<std::string, std::pair<UnixTime, std::uint32_t>> login_failures_;
  std::unique_ptr<ReadCache> cache_;
};

}  // namespace tollgate::cloud
