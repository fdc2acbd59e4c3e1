#include "tools/cloud/password.hpp"

#include <argon2.h>

#include <stdexcept>

#include "gateway/crypto.hpp"

namespace tollgate::cloud {

namespace {
constexpr std::size_t kSaltSize = 16;
constexpr std::size_t kHashSize = 32;
}  // namespace

std::string hash_password(std::string_view password, const Argon2Params& p) {
  const Bytes salt = crypto::random_bytes(kSaltSize);
  const std::size_t len =
      argon2_encodedlen(p.t_cost, p.m_cost_kib, p.parallelism, kSaltSize, kHashSize, Argon2_id);
  std::string encoded(len, '\0');
  const int rc =
      argon2id_hash_encoded(p.t_cost, p.m_cost_kib, p.parallelism, password.data(), password.size(),
                            salt.data(), salt.size(), kHashSize, encoded.data(), encoded.size());
  if (rc != ARGON2_OK) throw std::runtime_error(std::string("argon2: ") + argon2_error_message(rc));
  encoded.resize(encoded.find('\0'));
  return encoded;
}

bool verify_password(std::string_view password, const std::string& encoded) {
  if (encoded.rfind("$argon2id$", 0) != 0) return false;
  return argon2id_verify(encoded.c_str(), password.data(), password.size()) == ARGON2_OK;
}

}  // namespace tollgate::cloud
