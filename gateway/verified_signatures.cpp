#include "gateway/verified_signatures.hpp"

#include <string>

namespace tollgate {
namespace {

void append_u32(Bytes& out, std::uint32_t v) {
  for (int i = 3; i >= 0; --i) out.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
}

// Length-prefixed, so no two different field lists give the same bytes.
void append_field(Bytes& out, ByteView field) {
  append_u32(out, static_cast<std::uint32_t>(field.size()));
  out.insert(out.end(), field.begin(), field.end());
}

}  // namespace

Sha256 VerifiedSignatures::digest(const v1::Signed& s, ObjectType expected,
                                  const crypto::KeyId& key_id) {
  Bytes in;
  in.reserve(64 + s.signer_key_id().size() + s.body().size() + s.signature().size());
  append_u32(in, static_cast<std::uint32_t>(expected));
  append_field(in, ByteView(key_id.data(), key_id.size()));
  append_u32(in, static_cast<std::uint32_t>(s.type()));
  append_field(in, as_bytes(s.signer_key_id()));
  append_u32(in, static_cast<std::uint32_t>(s.algorithm()));
  append_field(in, as_bytes(s.body()));
  append_field(in, as_bytes(s.signature()));
  return crypto::sha256(in);
}

Status VerifiedSignatures::verify(const v1::Signed& signed_obj, ObjectType expected,
                                  const crypto::PublicKey& key, const AlgorithmPolicy& policy) {
  Status st = verify_signed(signed_obj, expected, key, policy);
  if (!st || capacity_ == 0) return st;
  const Sha256 d = digest(signed_obj, expected, key.id());
  std::lock_guard lock(mu_);
  if (!entries_.insert(d).second) return st;
  order_.push_back(d);
  while (order_.size() > capacity_) {
    entries_.erase(order_.front());
    order_.pop_front();
  }
  return st;
}

bool VerifiedSignatures::take(const v1::Signed& signed_obj, ObjectType expected,
                              const crypto::KeyId& key_id) {
  const Sha256 d = digest(signed_obj, expected, key_id);
  std::lock_guard lock(mu_);
  // Stale ids left in order_ are skipped by erase() later; the set is the truth.
  return entries_.erase(d) > 0;
}

std::size_t VerifiedSignatures::size() const {
  std::lock_guard lock(mu_);
  return entries_.size();
}

}  // namespace tollgate
