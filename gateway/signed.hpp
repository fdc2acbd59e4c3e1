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

// "tollgate.v1.<BodyMessage>\0": the full protobuf name of the type's body
// message, NUL included, e.g. "tollgate.v1.DeviceToken\0". The body of
// TYPE_STATUS_RESPONSE is a StatusReport, so its label is
// "tollgate.v1.StatusReport\0". Empty for TYPE_UNSPECIFIED and unknown values,
// which sign_object and verify_signed refuse.
std::string_view domain_label(ObjectType type);
// domain_label(type) followed by the body bytes: exactly what the key signs
// (Ed25519 signs it as is; ECDSA and RSA-PSS sign its SHA-256).
Bytes signing_input(ObjectType type, ByteView body);

// Which algorithms and key sizes a verifier accepts (the device's allow-list).
struct AlgorithmPolicy {
  std::set<crypto::Algorithm> allowed{v1::Signed::ALGORITHM_ED25519,
                                      v1::Signed::ALGORITHM_ECDSA_P256_SHA256,
                                      v1::Signed::ALGORITHM_RSA_PSS_SHA256};
  int min_rsa_bits = 2048;
  // ALGORITHM_NOT_ALLOWED when the key's algorithm is not in `allowed` (a
  // default-constructed key never is); KEY_TOO_WEAK for RSA below min_rsa_bits.
  Status check(const crypto::PublicKey& key) const;
};

// Signs `body` as an object of `type` with `key`: fills every field of the
// envelope. ERROR_MALFORMED for a type without a label, ERROR_TOO_LARGE when
// the envelope would exceed kMaxSignedObjectSize, ERROR_INTERNAL if the key
// cannot sign.
Result<v1::Signed> sign_object(ObjectType type, ByteView body, const crypto::PrivateKey& key);

// Parses untrusted bytes into a Signed envelope. Does not verify and does not
// touch the body. ERROR_TOO_LARGE above kMaxSignedObjectSize (checked before
// parsing); ERROR_MALFORMED when the bytes do not parse, carry fields this
// version does not know, or when signer_key_id is not 16 bytes, algorithm or
// type is UNSPECIFIED or not a known value, or the signature is empty or longer
// than crypto::kMaxSignatureSize.
Result<v1::Signed> parse_signed(ByteView bytes);

// Verifies `signed_obj` as an object of `expected` under `key`. Checks run in
// this order and the first failure is returned:
//   type mismatch (or `expected` unlabeled) -> ERROR_WRONG_TYPE
//   signer_key_id != key.id()               -> ERROR_UNKNOWN_SIGNER
//   key's algorithm not allowed / too weak  -> ERROR_ALGORITHM_NOT_ALLOWED / ERROR_KEY_TOO_WEAK
//   algorithm field != key's algorithm      -> ERROR_ALGORITHM_MISMATCH
//   signature does not verify               -> ERROR_BAD_SIGNATURE
// The signature is checked over signing_input(expected, body) with the body
// exactly as received. A caller holding several trusted keys looks the signer
// up by signer_key_id and reports ERROR_UNKNOWN_SIGNER itself when none matches.
Status verify_signed(const v1::Signed& signed_obj, ObjectType expected,
                     const crypto::PublicKey& key, const AlgorithmPolicy& policy);

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
