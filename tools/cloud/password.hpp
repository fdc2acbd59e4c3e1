// Password hashing with Argon2id (libargon2, the reference implementation).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace tollgate::cloud {

struct Argon2Params {
  // OWASP's baseline for Argon2id: 19 MiB, 2 passes, 1 lane.
  std::uint32_t t_cost = 2;
  std::uint32_t m_cost_kib = 19 * 1024;
  std::uint32_t parallelism = 1;
};

// The encoded form "$argon2id$v=19$m=...,t=...,p=...$salt$hash" with a fresh
// 16-byte salt. Throws std::runtime_error if libargon2 fails (out of memory).
std::string hash_password(std::string_view password, const Argon2Params& params = {});

// True when `password` matches `encoded` (constant time inside libargon2).
// False for a wrong password and for an encoded string that does not parse.
bool verify_password(std::string_view password, const std::string& encoded);

}  // namespace tollgate::cloud
