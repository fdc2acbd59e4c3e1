// Typed signing and verification of Signed objects.
//
// The signing input is the object type's domain label followed by the body
// bytes, so a signature over one kind of object can never be passed off as
// another (THREATS A11). Verification checks type, algorithm policy, key match
// and the signature over the *received* body bytes before anything parses the body.
#pragma once

#include <set>
#include <string_view>

#include "gateway/bytes.hpp"
#include "gateway/crypto.hpp"
#include "gateway/result.hpp"

namespace tollgate {

using ObjectType = v1::Signed::Type;

// Upper bound on any serialized Signed object we accept (ERROR_TOO_LARGE above it).
constexpr std::size_t kMaxSignedObjectSize = 16 * 1024;

// "tollgate.v1.<TypeName>\0", e.g. "tollgate.v1.DeviceToken\0" (NUL included).
std::string_view domain_label(ObjectType type);
Bytes signing_input(ObjectType type, ByteView body);

// Which algorithms and key sizes a verifier accepts (the device's allow-list).
struct AlgorithmPolicy {
  std::set<crypto::Algorithm> allowed{v1::Signed::ALGORITHM_ED25519,
                                      v1::Signed::ALGORITHM_ECDSA_P256_SHA256,
                                      v1::Signed::ALGORITHM_RSA_PSS_SHA256};
  int min_rsa_bits = 2048;
  Status check(const crypto::PublicKey& key) const;  // ALGORITHM_NOT_ALLOWED / KEY_TOO_WEAK
};

// Signs `body` as an object of `type` with `key`.
Result<v1::Signed> sign_object(ObjectType type, ByteView body, const crypto::PrivateKey& key);

// Parses untrusted bytes into a Signed envelope (size cap, required fields,
// key id length). Does not verify and does not touch the body.
Result<v1::Signed> parse_signed(ByteView bytes);

// Verifies `signed_obj` as an object of `expected` under `key`:
//   type mismatch                          -> ERROR_WRONG_TYPE
//   signer_key_id != key.id()              -> ERROR_UNKNOWN_SIGNER
//   key's algorithm not allowed / too weak -> ERROR_ALGORITHM_NOT_ALLOWED / ERROR_KEY_TOO_WEAK
//   algorithm field != key's algorithm     -> ERROR_ALGORITHM_MISMATCH
//   signature does not verify              -> ERROR_BAD_SIGNATURE
Status verify_signed(const v1::Signed& signed_obj, ObjectType expected, const crypto::PublicKey& key,
                     const AlgorithmPolicy& policy);

// Verify, then parse the body as Message (ERROR_MALFORMED if it does not parse).
template <class Message>
Result<Message> verify_and_parse(const v1::Signed& signed_obj, ObjectType expected,
                                 const crypto::PublicKey& key, const AlgorithmPolicy& policy) {
  if (auto st = verify_signed(signed_obj, expected, key, policy); !st) return st.error();
  Message m;
  if (!m.ParseFromString(signed_obj.body())) return v1::ERROR_MALFORMED;
  return m;
}

}  // namespace tollgate
