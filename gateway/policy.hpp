// What a device accepts: algorithm allow-lists per key role, time tolerances
// and the caps that bound every table the gateway keeps. Every cap has a
// default; nothing the gateway stores grows without a bound.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <string>

#include "gateway/result.hpp"
#include "gateway/signed.hpp"

namespace tollgate {

// Seconds since the Unix epoch, UTC. The gateway never reads a clock: callers
// pass the device clock in, and the gateway combines it with its time floor.
using UnixTime = std::int64_t;

struct DevicePolicy {
  // Allow-lists per role of key: who may sign authorizations (master), tokens
  // (cloud) and commands (user). A key outside its list is refused even when
  // the signature is good, so a weaker algorithm cannot be slipped in.
  AlgorithmPolicy master_algorithms;
  AlgorithmPolicy cloud_algorithms;
  AlgorithmPolicy user_algorithms;

  // Tolerance for the signer's clock running ahead of the device's: an
  // authorization's not_before and a token's issued_at may lie at most this far
  // beyond the device's now. Expiry gets no tolerance (it is the device's call).
  std::int64_t clock_skew_seconds = 300;

  // A nonce is single use and dies this long after it was issued.
  std::int64_t nonce_lifetime_seconds = 120;
  std::size_t max_nonces_in_flight = 32;  // the oldest is evicted beyond this

  std::size_t max_authorizations = 16;  // installed cloud key authorizations
  std::size_t max_revoked_ids = 4096;   // revocation set (grow-only: full means refuse)
  // Live tokens plus tombstones of exhausted, unexpired tokens. Neither may be
  // forgotten before it expires (a forgotten token could be re-offered with its
  // uses restored), so a full table refuses new tokens with ERROR_LIMIT_REACHED.
  std::size_t max_tokens = 1024;
  std::size_t max_roles_per_token = 16;
  std::size_t max_role_length = 64;
  std::size_t idempotency_cache_size = 64;  // the oldest entry is evicted beyond this
  // Audit events of decisions that change no state wait in memory for the next
  // commit; at this many the gateway commits them on their own.
  std::size_t max_pending_audit_events = 64;
  std::size_t max_response_size = kMaxSignedObjectSize;
};

using CommandArguments = google::protobuf::Map<std::string, std::string>;

// How the device treats one command. The instrument's command registry fills
// these; the gateway only checks them.
struct CommandRule {
  std::uint32_t cost = 1;  // uses charged to one token; 0 = free but still needs a valid token
  // Roles that unlock the command; empty = any valid token of the user. A token
  // qualifies when its roles list holds at least one of these.
  std::set<std::string, std::less<>> roles;
  // Returns non-ok for arguments the command must not run with (-> ERROR_BAD_ARGUMENT).
  // Empty = any arguments.
  std::function<Status(const CommandArguments&)> validator;
};

using CommandRules = std::map<std::string, CommandRule, std::less<>>;

}  // namespace tollgate
