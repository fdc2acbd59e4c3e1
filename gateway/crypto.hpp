// Keys, signatures and hashes over OpenSSL 3 EVP. No I/O: PEM comes in and goes
// out as strings; the caller reads and writes files.
//
// Algorithms (docs/PROTOCOL.md):
//   Ed25519               - signs the message directly (PureEdDSA)
//   ECDSA P-256 / SHA-256 - signature is raw r || s, 64 bytes (not DER)
//   RSA-PSS / SHA-256     - MGF1-SHA-256, salt length 32; 2048- or 3072-bit keys
//
// Keys are accepted only in one encoding each, so a key has exactly one key id:
// canonical SPKI DER; Ed25519; P-256 as a named curve with an uncompressed
// point; RSA as plain rsaEncryption SPKI (what `openssl genpkey -algorithm RSA`
// writes; RSASSA-PSS-restricted SPKI is refused), odd exponent > 1, at most
// kMaxRsaBits. Anything else is ERROR_MALFORMED. Minimum sizes are policy, not
// parsing: an RSA-1024 key parses and AlgorithmPolicy::check refuses it.
//
// Every function clears OpenSSL's thread-local error queue before it returns, so
// no stale entry surfaces later in unrelated code (Asio's TLS layer reads it).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "gateway/bytes.hpp"
#include "gateway/result.hpp"

typedef struct evp_pkey_st EVP_PKEY;      // NOLINT: OpenSSL's own forward declarations
typedef struct evp_md_ctx_st EVP_MD_CTX;  // NOLINT

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

// Largest RSA modulus a public key may have (bounds the cost of one verify).
constexpr int kMaxRsaBits = 4096;
// Largest signature any supported key produces (RSA-4096); parse_signed caps at it.
constexpr std::size_t kMaxSignatureSize = 512;

std::array<std::uint8_t, 32> sha256(ByteView data);
// Fills n bytes from OpenSSL's CSPRNG (nonces, UUIDs, request ids).
// Neither function has a failure path: if libcrypto cannot hash or cannot seed
// its CSPRNG the process aborts rather than return predictable bytes.
Bytes random_bytes(std::size_t n);

struct PkeyDeleter {
  void operator()(EVP_PKEY* p) const;
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyDeleter>;
struct MdCtxDeleter {
  void operator()(EVP_MD_CTX* p) const;
};

// A verification key. Default-constructed, it holds no key and verifies nothing.
class PublicKey {
 public:
  // ERROR_MALFORMED on junk, trailing bytes, a non-canonical encoding or an
  // unsupported type (see the top of this file).
  static Result<PublicKey> from_spki_der(ByteView der);
  // The first "-----BEGIN PUBLIC KEY-----" block (SPKI); text after it is ignored.
  static Result<PublicKey> from_pem(std::string_view pem);

  Algorithm algorithm() const { return alg_; }
  int bits() const { return bits_; }  // 256 for Ed25519 and P-256; modulus size for RSA
  const Bytes& spki_der() const { return der_; }
  std::string pem() const;  // "" only if OpenSSL cannot allocate
  const KeyId& id() const { return id_; }

  // Verifies `signature` over `message` with this key's algorithm (hashing as the
  // algorithm requires). Returns ERROR_BAD_SIGNATURE on any mismatch, including
  // a signature of the wrong length (Ed25519 and ECDSA: 64 bytes; RSA: the
  // modulus size) and an RSA-PSS signature whose salt is not 32 bytes.
  // ERROR_INTERNAL only if OpenSSL cannot set up the operation.
  // Note: ECDSA signatures are malleable ((r, s) and (r, n - s) both verify);
  // nothing may identify an object by its signature bytes.
  Status verify(ByteView message, ByteView signature) const;

 private:
  PkeyPtr key_;
  Algorithm alg_ = v1::Signed::ALGORITHM_UNSPECIFIED;
  int bits_ = 0;
  Bytes der_;
  KeyId id_{};
  // A verify context set up once for this key (algorithm, digest, PSS
  // parameters); verify() starts from a copy of it instead of fetching and
  // configuring the algorithm on every call. Only ever read after construction,
  // so clones share it. Null if OpenSSL could not set it up: verify() then
  // configures a context per call.
  std::shared_ptr<const EVP_MD_CTX> verify_template_;

 public:
  // Another handle on the same key material (PublicKey is otherwise move-only).
  PublicKey clone() const;
};

// A signing key; move-only. Default-constructed, it holds no key and sign()
// returns ERROR_INTERNAL.
class PrivateKey {
 public:
  static Result<PrivateKey> generate(KeyType type);  // ERROR_INTERNAL if OpenSSL fails
  // The first PKCS#8 PEM block: "PRIVATE KEY" with an empty passphrase, or
  // "ENCRYPTED PRIVATE KEY" with its passphrase (any PBES2 scheme OpenSSL
  // reads). Everything else gives ERROR_MALFORMED: a wrong or missing
  // passphrase, a passphrase for an unencrypted key (the caller believed it
  // protected), legacy "RSA PRIVATE KEY"/"EC PRIVATE KEY" PEM, or a key whose
  // public half PublicKey would refuse. Passphrases are capped at 1024 bytes.
  static Result<PrivateKey> from_pem(std::string_view pem, std::string_view passphrase = {});

  // PKCS#8 PEM. With a passphrase: "ENCRYPTED PRIVATE KEY", PBES2 with scrypt
  // (N=16384, r=8, p=1, random salt) and AES-256-CBC, readable by
  // `openssl pkey -passin`.
  Result<std::string> pem(std::string_view passphrase = {}) const;
  const PublicKey& public_key() const { return pub_; }
  Algorithm algorithm() const { return pub_.algorithm(); }

  // Ed25519: 64 bytes; ECDSA: raw r || s, 64 bytes; RSA-PSS: the modulus size.
  Result<Bytes> sign(ByteView message) const;

 private:
  static Result<PrivateKey> adopt(PkeyPtr key);

  PkeyPtr key_;
  PublicKey pub_;
};

}  // namespace tollgate::crypto
