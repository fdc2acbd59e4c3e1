// Keys, signatures and hashes over OpenSSL 3 EVP. No I/O: PEM comes in and goes
// out as strings; the caller reads and writes files.
//
// Algorithms (docs/PROTOCOL.md):
//   Ed25519               - signs the message directly (PureEdDSA)
//   ECDSA P-256 / SHA-256 - signature is raw r || s, 64 bytes (not DER)
//   RSA-PSS / SHA-256     - MGF1-SHA-256, salt length 32; 2048- or 3072-bit keys
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "gateway/bytes.hpp"
#include "gateway/result.hpp"

typedef struct evp_pkey_st EVP_PKEY;  // NOLINT: OpenSSL's own forward declaration

namespace tollgate::crypto {

using Algorithm = v1::Signed::Algorithm;

enum class KeyType { kEd25519, kP256, kRsa2048, kRsa3072 };
// "ed25519" | "p256" | "rsa2048" | "rsa3072"
std::optional<KeyType> key_type_from_name(std::string_view name);
std::string_view key_type_name(KeyType t);
std::string_view algorithm_name(Algorithm a);  // "Ed25519", "ECDSA-P256-SHA256", "RSA-PSS-SHA256"

// First 16 bytes of SHA-256 over the SPKI DER of the public key.
using KeyId = std::array<std::uint8_t, 16>;
constexpr std::size_t kKeyIdSize = 16;

std::array<std::uint8_t, 32> sha256(ByteView data);
// Fills n bytes from OpenSSL's CSPRNG (nonces, UUIDs, request ids).
Bytes random_bytes(std::size_t n);

struct PkeyDeleter {
  void operator()(EVP_PKEY* p) const;
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyDeleter>;

class PublicKey {
 public:
  static Result<PublicKey> from_spki_der(ByteView der);  // ERROR_MALFORMED on junk or unsupported type
  static Result<PublicKey> from_pem(std::string_view pem);

  Algorithm algorithm() const { return alg_; }
  int bits() const { return bits_; }       // 256 for Ed25519 and P-256; modulus size for RSA
  const Bytes& spki_der() const { return der_; }
  std::string pem() const;
  const KeyId& id() const { return id_; }

  // Verifies `signature` over `message` with this key's algorithm (hashing as the
  // algorithm requires). Returns ERROR_BAD_SIGNATURE on any mismatch, including
  // a signature of the wrong length.
  Status verify(ByteView message, ByteView signature) const;

 private:
  PkeyPtr key_;
  Algorithm alg_ = v1::Signed::ALGORITHM_UNSPECIFIED;
  int bits_ = 0;
  Bytes der_;
  KeyId id_{};

 public:
  // Another handle on the same key material (PublicKey is otherwise move-only).
  PublicKey clone() const;
};

class PrivateKey {
 public:
  static Result<PrivateKey> generate(KeyType type);
  // PKCS#8 PEM, encrypted or not. An empty passphrase is only valid for an
  // unencrypted key; a wrong passphrase gives ERROR_MALFORMED.
  static Result<PrivateKey> from_pem(std::string_view pem, std::string_view passphrase = {});

  // PKCS#8 PEM; encrypted with AES-256-CBC (scrypt/PBKDF2 per OpenSSL default) when a passphrase is given.
  Result<std::string> pem(std::string_view passphrase = {}) const;
  const PublicKey& public_key() const { return pub_; }
  Algorithm algorithm() const { return pub_.algorithm(); }

  Result<Bytes> sign(ByteView message) const;

 private:
  PkeyPtr key_;
  PublicKey pub_;
};

}  // namespace tollgate::crypto
