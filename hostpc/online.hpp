// The host's online side without I/O: the cloud session file, the enrollment
// proof, and the checks every token minted by the cloud passes before it is
// cached (docs/CLOUD.md). The HTTP part is cloud_client.hpp; main.cpp drives both.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "gateway/bytes.hpp"
#include "gateway/crypto.hpp"
#include "gateway/result.hpp"
#include "hostpc/cache.hpp"
#include "hostpc/cloud_client.hpp"

namespace tollgate::host {

// Exit statuses of the online commands, after protocol.hpp's 0..5.
constexpr int kExitCloudUnreachable = 6;  // no connection, no answer in time, or a 5xx
constexpr int kExitCloudRefused = 7;      // a 4xx with the server's error code
constexpr int kExitCloudGarbage = 8;      // not the API, or content that does not verify

int exit_code(CloudFailure failure);

// Canonical padded base64 (RFC 4648 §4), as the cloud's API uses.
std::string base64_encode(ByteView data);
// nullopt unless `text` is canonical padded base64.
std::optional<Bytes> base64_decode(std::string_view text);

// What `login` leaves for the other online commands, stored as JSON in
// HOME/identities/UUID.session, mode 0600 (the secret is a bearer credential).
struct CloudSession {
  std::string cloud;    // https://HOST:PORT as given to login
  std::string ca_pem;   // the CA the cloud's certificate must chain to ("": system store)
  std::string account;  // the cloud user name
  Bytes user_id;        // 16 bytes, as the cloud reported it
  std::string session;  // 64 hex digits
  UnixSeconds expires_at = 0;
};

std::string session_path(const std::string& home, ByteView user_id);
// Writes atomically (temporary file, then rename) with mode 0600.
bool save_session(const std::string& home, const CloudSession& s, std::string* error);
// nullopt with *error when missing or unreadable.
std::optional<CloudSession> load_session(const std::string& home, ByteView user_id,
                                         std::string* error);

// "tollgate.cloud.v1.Enrollment\0" || challenge || user id || SPKI DER: what the
// user key signs to prove possession at enrollment.
Bytes enrollment_message(ByteView challenge, ByteView user_id, ByteView spki_der);

// The cloud key a Signed CloudKeyAuthorization names (the host cannot check the
// master's signature: the device does). ERROR_MALFORMED etc. from parsing.
Result<crypto::PublicKey> authorized_cloud_key(ByteView signed_authorization);

// What a minted token must be for the host to cache it.
struct TokenExpectation {
  const crypto::PublicKey* cloud_key = nullptr;
  std::uint64_t authorization_id = 0;
  Bytes device_id;
  Bytes user_id;
  Bytes user_spki;  // the identity's public key: a token for another key is useless
  UnixSeconds now = 0;
};
// Shape (parse_token), signature under the cloud key, then each field against
// `want`. On refusal returns nullopt and sets *why to one line.
std::optional<CachedToken> check_minted_token(ByteView signed_token, const TokenExpectation& want,
                                              std::string* why);

}  // namespace tollgate::host
