#include "gateway/signed.hpp"

#include <google/protobuf/unknown_field_set.h>

#include <algorithm>
#include <string>

namespace tollgate {

using namespace std::string_view_literals;

std::string_view domain_label(ObjectType type) {
  // The trailing NUL ends the label unambiguously: no label is a prefix of
  // another, so label || body splits one way only.
  switch (type) {
    case v1::Signed::TYPE_CLOUD_KEY_AUTHORIZATION:
      return "tollgate.v1.CloudKeyAuthorization\0"sv;
    case v1::Signed::TYPE_DEVICE_TOKEN:
      return "tollgate.v1.DeviceToken\0"sv;
    case v1::Signed::TYPE_COMMAND_REQUEST:
      return "tollgate.v1.CommandRequest\0"sv;
    case v1::Signed::TYPE_COMMAND_RESPONSE:
      return "tollgate.v1.CommandResponse\0"sv;
    case v1::Signed::TYPE_AUDIT_EXPORT:
      return "tollgate.v1.AuditExport\0"sv;
    case v1::Signed::TYPE_STATUS_RESPONSE:
      return "tollgate.v1.StatusReport\0"sv;
    default:
      break;
  }
  return {};
}

Bytes signing_input(ObjectType type, ByteView body) {
  const auto label = as_bytes(domain_label(type));
  Bytes input;
  input.reserve(label.size() + body.size());
  input.insert(input.end(), label.begin(), label.end());
  input.insert(input.end(), body.begin(), body.end());
  return input;
}

Status AlgorithmPolicy::check(const crypto::PublicKey& key) const {
  const crypto::Algorithm alg = key.algorithm();
  if (alg == v1::Signed::ALGORITHM_UNSPECIFIED || !allowed.contains(alg)) {
    return v1::ERROR_ALGORITHM_NOT_ALLOWED;
  }
  if (alg == v1::Signed::ALGORITHM_RSA_PSS_SHA256 && key.bits() < min_rsa_bits) {
    return v1::ERROR_KEY_TOO_WEAK;
  }
  return {};
}

Result<v1::Signed> sign_object(ObjectType type, ByteView body, const crypto::PrivateKey& key) {
  if (domain_label(type).empty()) return v1::ERROR_MALFORMED;
  // Refuse before signing what no verifier would accept.
  if (body.size() > kMaxSignedObjectSize) return v1::ERROR_TOO_LARGE;
  auto signature = key.sign(signing_input(type, body));
  if (!signature) return signature.error();
  v1::Signed out;
  out.set_type(type);
  out.set_body(std::string(as_chars(body)));
  const auto& id = key.public_key().id();
  out.set_signer_key_id(std::string(id.begin(), id.end()));
  out.set_algorithm(key.algorithm());
  out.set_signature(std::string(as_chars(*signature)));
  if (out.ByteSizeLong() > kMaxSignedObjectSize) return v1::ERROR_TOO_LARGE;
  return out;
}

Result<v1::Signed> parse_signed(ByteView bytes) {
  if (bytes.size() > kMaxSignedObjectSize) return v1::ERROR_TOO_LARGE;
  v1::Signed out;
  if (!out.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) return v1::ERROR_MALFORMED;
  // Fields this version does not know could carry meaning a newer signer
  // intended; refusing them keeps one reading of every accepted envelope.
  if (!out.GetReflection()->GetUnknownFields(out).empty()) return v1::ERROR_MALFORMED;
  if (out.signer_key_id().size() != crypto::kKeyIdSize) return v1::ERROR_MALFORMED;
  if (out.algorithm() == v1::Signed::ALGORITHM_UNSPECIFIED ||
      !v1::Signed::Algorithm_IsValid(out.algorithm())) {
    return v1::ERROR_MALFORMED;
  }
  if (out.type() == v1::Signed::TYPE_UNSPECIFIED || !v1::Signed::Type_IsValid(out.type())) {
    return v1::ERROR_MALFORMED;
  }
  if (out.signature().empty() || out.signature().size() > crypto::kMaxSignatureSize) {
    return v1::ERROR_MALFORMED;
  }
  return out;
}

Status verify_signed(const v1::Signed& signed_obj, ObjectType expected,
                     const crypto::PublicKey& key, const AlgorithmPolicy& policy) {
  if (domain_label(expected).empty() || signed_obj.type() != expected) return v1::ERROR_WRONG_TYPE;
  const auto& id = key.id();
  const std::string& claimed = signed_obj.signer_key_id();
  if (!std::equal(claimed.begin(), claimed.end(), id.begin(), id.end(),
                  [](char a, std::uint8_t b) { return static_cast<std::uint8_t>(a) == b; })) {
    return v1::ERROR_UNKNOWN_SIGNER;
  }
  if (auto st = policy.check(key); !st) return st;
  if (signed_obj.algorithm() != key.algorithm()) return v1::ERROR_ALGORITHM_MISMATCH;
  // The label comes from `expected`, never from the object, and the body is
  // the received bytes: nothing has been parsed yet.
  return key.verify(signing_input(expected, as_bytes(signed_obj.body())),
                    as_bytes(signed_obj.signature()));
}

}  // namespace tollgate
