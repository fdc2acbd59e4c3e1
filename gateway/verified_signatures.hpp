// Signatures verified ahead, on other threads, so the gateway's one loop does
// not verify them again: the way an instrument with several busy links uses
// more than one core for signature checks (instrument/server.hpp).
//
// Holds only successes of verify_signed (gateway/signed.hpp), each under a
// SHA-256 over everything verify_signed looks at: the expected type, the
// verifying key's id, and the envelope's type, signer key id, algorithm, body
// and signature. take() answers true for exactly such an object and key, once,
// and forgets it; anything else (a miss, an evicted entry, another key, a
// changed byte) makes the gateway verify as it always does. A failure is never
// remembered: a forged signature is always checked (and rejected) by the gateway.
// The policy is the caller's to pass: the gateway's own (see Gateway::policy()).
//
// Bounded: beyond `capacity` the oldest entries are forgotten. Thread-safe.
#pragma once

#include <cstddef>
#include <deque>
#include <mutex>
#include <set>

#include "gateway/crypto.hpp"
#include "gateway/signed.hpp"
#include "gateway/storage.hpp"

namespace tollgate {

class VerifiedSignatures {
 public:
  explicit VerifiedSignatures(std::size_t capacity = 1024) : capacity_(capacity) {}

  // verify_signed(signed_obj, expected, key, policy), remembering a success.
  Status verify(const v1::Signed& signed_obj, ObjectType expected, const crypto::PublicKey& key,
                const AlgorithmPolicy& policy);
  // True, once, if verify() succeeded for exactly this object and key.
  bool take(const v1::Signed& signed_obj, ObjectType expected, const crypto::KeyId& key_id);

  std::size_t size() const;

 private:
  static Sha256 digest(const v1::Signed& signed_obj, ObjectType expected,
                       const crypto::KeyId& key_id);

  const std::size_t capacity_;
  mutable std::mutex mu_;
  std::set<Sha256> entries_;
  std::deque<Sha256> order_;  // insertion order, for eviction
};

}  // namespace tollgate
