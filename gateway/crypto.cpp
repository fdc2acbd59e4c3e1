// Hide every deprecated OpenSSL declaration, so a low-level API (RSA_*, EC_KEY_*,
// SHA256_Init, ...) cannot creep in: only the EVP interface compiles here.
#ifndef OPENSSL_API_COMPAT
#define OPENSSL_API_COMPAT 30000
#endif
#ifndef OPENSSL_NO_DEPRECATED
#define OPENSSL_NO_DEPRECATED
#endif

#include "gateway/crypto.hpp"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/obj_mac.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include "gateway/c_ptr.hpp"

#include <climits>
#include <cstdlib>

namespace tollgate::crypto {
namespace {

template <auto Free>
using OpenSslDeleter = CFree<Free>;
using BioPtr = std::unique_ptr<BIO, OpenSslDeleter<BIO_free_all>>;
using BnPtr = std::unique_ptr<BIGNUM, OpenSslDeleter<BN_free>>;
using EcdsaSigPtr = std::unique_ptr<ECDSA_SIG, OpenSslDeleter<ECDSA_SIG_free>>;
using MdCtxPtr = std::unique_ptr<EVP_MD_CTX, OpenSslDeleter<EVP_MD_CTX_free>>;
using P8InfoPtr = std::unique_ptr<PKCS8_PRIV_KEY_INFO, OpenSslDeleter<PKCS8_PRIV_KEY_INFO_free>>;
using X509SigPtr = std::unique_ptr<X509_SIG, OpenSslDeleter<X509_SIG_free>>;
using X509AlgorPtr = std::unique_ptr<X509_ALGOR, OpenSslDeleter<X509_ALGOR_free>>;
struct OpenSslFree {
  void operator()(void* p) const { OPENSSL_free(p); }
};
template <class T>
using OpenSslBuffer = std::unique_ptr<T, OpenSslFree>;

// OpenSSL reports failures on a thread-local queue. Entries left behind would
// surface later in unrelated code (Asio's TLS layer reads the same queue), so
// every public entry point drains it on the way out, success or failure.
class ErrorQueueDrain {
 public:
  ErrorQueueDrain() = default;
  ErrorQueueDrain(const ErrorQueueDrain&) = delete;
  ErrorQueueDrain& operator=(const ErrorQueueDrain&) = delete;
  ~ErrorQueueDrain() { ERR_clear_error(); }
};

constexpr int kPssSaltLength = 32;
constexpr std::size_t kEcdsaScalarSize = 32;
constexpr std::size_t kEd25519SignatureSize = 64;
// Bounds on untrusted encodings, far above any supported key (an RSA-4096 SPKI
// is about 550 bytes, its encrypted PKCS#8 PEM about 3.4 kB).
constexpr std::size_t kMaxSpkiDerSize = 2048;
constexpr std::size_t kMaxPemSize = 16 * 1024;
constexpr std::size_t kMaxPassphraseSize = 1024;
// scrypt cost for encrypted private keys: the parameters `openssl pkcs8 -scrypt`
// uses (16 MiB, tens of milliseconds), within OpenSSL's default decode memory cap.
constexpr std::uint64_t kScryptN = 16384;
constexpr std::uint64_t kScryptR = 8;
constexpr std::uint64_t kScryptP = 1;

// OpenSSL accepts a null pointer with length 0 in most, not all, paths; never
// hand it one.
const unsigned char* data_or_empty(ByteView b) {
  static const unsigned char kEmpty = 0;
  return b.empty() ? &kEmpty : b.data();
}

// Fetched once: an implicit fetch by name on every signature costs a lock and
// a lookup, which shows up next to a 50 µs verify.
const EVP_MD* sha256_md() {
  static EVP_MD* const md = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  return md;
}

bool set_pss_parameters(EVP_PKEY_CTX* pctx) {
  const EVP_MD* md = sha256_md();
  return md != nullptr && EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) > 0 &&
         EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, md) > 0 &&
         EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, kPssSaltLength) > 0;
}

// Reads the first PEM block: its label and DER payload. Rejects blocks with
// RFC 1421 headers (legacy "Proc-Type: ENCRYPTED" keys).
struct PemBlock {
  std::string label;
  Bytes der;
};
std::optional<PemBlock> read_pem_block(std::string_view pem) {
  if (pem.empty() || pem.size() > kMaxPemSize) return std::nullopt;
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return std::nullopt;
  char* name = nullptr;
  char* header = nullptr;
  unsigned char* data = nullptr;
  long len = 0;
  const int rc = PEM_read_bio(bio.get(), &name, &header, &data, &len);
  OpenSslBuffer<char> name_owner(name);
  OpenSslBuffer<char> header_owner(header);
  OpenSslBuffer<unsigned char> data_owner(data);
  if (rc != 1 || name == nullptr || data == nullptr || len <= 0) return std::nullopt;
  if (header != nullptr && header[0] != '\0') return std::nullopt;
  PemBlock block{name, Bytes(data, data + len)};
  OPENSSL_cleanse(data, static_cast<std::size_t>(len));
  return block;
}

std::optional<std::string> bio_contents(BIO* bio) {
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio, &data);
  if (len <= 0 || data == nullptr) return std::nullopt;
  return std::string(data, static_cast<std::size_t>(len));
}

std::optional<Bytes> spki_der_of(EVP_PKEY* key) {
  const int len = i2d_PUBKEY(key, nullptr);
  if (len <= 0) return std::nullopt;
  Bytes der(static_cast<std::size_t>(len));
  unsigned char* p = der.data();
  if (i2d_PUBKEY(key, &p) != len) return std::nullopt;
  return der;
}

struct KeyShape {
  Algorithm algorithm;
  int bits;
};

// Decides which of our algorithms a parsed key belongs to; anything else
// (other curves, explicit curve parameters, compressed points, RSA-PSS-only
// SPKI, DSA, X25519, ...) is MALFORMED.
Result<KeyShape> classify(EVP_PKEY* key) {
  if (EVP_PKEY_is_a(key, "ED25519") == 1) return KeyShape{v1::Signed::ALGORITHM_ED25519, 256};
  if (EVP_PKEY_is_a(key, "EC") == 1) {
    char group[64] = {};
    std::size_t group_len = 0;
    if (EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group,
                                       &group_len) != 1 ||
        std::string_view(group, group_len) != SN_X9_62_prime256v1) {
      return v1::ERROR_MALFORMED;
    }
    // Only the uncompressed point form, so one key has one SPKI and one key id.
    // (The decoder remembers the form it read; the encoded-point parameter
    // would not tell, it always answers uncompressed.)
    char form[32] = {};
    std::size_t form_len = 0;
    if (EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT, form,
                                       sizeof form, &form_len) != 1 ||
        std::string_view(form, form_len) != OSSL_PKEY_EC_POINT_CONVERSION_FORMAT_UNCOMPRESSED) {
      return v1::ERROR_MALFORMED;
    }
    return KeyShape{v1::Signed::ALGORITHM_ECDSA_P256_SHA256, 256};
  }
  if (EVP_PKEY_is_a(key, "RSA") == 1) {
    const int bits = EVP_PKEY_get_bits(key);
    if (bits <= 0 || bits > kMaxRsaBits) return v1::ERROR_MALFORMED;
    // An even or unit exponent makes "verification" meaningless; reject it
    // here rather than rely on the padding check to fail.
    BIGNUM* e_raw = nullptr;
    if (EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_RSA_E, &e_raw) != 1) return v1::ERROR_MALFORMED;
    BnPtr e(e_raw);
    if (BN_is_odd(e.get()) != 1 || BN_is_one(e.get()) == 1) return v1::ERROR_MALFORMED;
    return KeyShape{v1::Signed::ALGORITHM_RSA_PSS_SHA256, bits};
  }
  return v1::ERROR_MALFORMED;
}

// Appends one scalar (32 bytes, big-endian, unsigned) as a DER INTEGER: minimal
// length, a 0x00 in front when the top bit is set, 0 as the single byte 0x00.
// This is exactly what i2d_ECDSA_SIG writes, without BIGNUM allocations on
// every verify.
void append_der_integer(Bytes& out, ByteView scalar) {
  std::size_t skip = 0;
  while (skip < scalar.size() && scalar[skip] == 0) ++skip;
  const ByteView digits = scalar.subspan(skip);
  const bool pad = digits.empty() || (digits[0] & 0x80) != 0;
  out.push_back(0x02);
  out.push_back(static_cast<std::uint8_t>(digits.size() + (pad ? 1 : 0)));
  if (pad) out.push_back(0x00);
  out.insert(out.end(), digits.begin(), digits.end());
}

// Raw r || s (32 + 32 bytes, big-endian) <-> the DER SEQUENCE OpenSSL speaks.
// A SEQUENCE of two INTEGERs of at most 33 bytes each stays below 128 bytes,
// so its length takes one byte.
std::optional<Bytes> ecdsa_raw_to_der(ByteView raw) {
  if (raw.size() != 2 * kEcdsaScalarSize) return std::nullopt;
  Bytes der;
  der.reserve(2 + 2 * (2 + kEcdsaScalarSize + 1));
  der.push_back(0x30);
  der.push_back(0x00);  // patched below
  append_der_integer(der, raw.first(kEcdsaScalarSize));
  append_der_integer(der, raw.subspan(kEcdsaScalarSize));
  der[1] = static_cast<std::uint8_t>(der.size() - 2);
  return der;
}

std::optional<Bytes> ecdsa_der_to_raw(ByteView der) {
  const unsigned char* p = der.data();
  EcdsaSigPtr sig(d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(der.size())));
  if (!sig || p != der.data() + der.size()) return std::nullopt;
  const BIGNUM* r = nullptr;
  const BIGNUM* s = nullptr;
  ECDSA_SIG_get0(sig.get(), &r, &s);
  if (r == nullptr || s == nullptr) return std::nullopt;
  Bytes raw(2 * kEcdsaScalarSize);
  const int n = static_cast<int>(kEcdsaScalarSize);
  if (BN_bn2binpad(r, raw.data(), n) != n ||
      BN_bn2binpad(s, raw.data() + kEcdsaScalarSize, n) != n) {
    return std::nullopt;
  }
  return raw;
}

}  // namespace

std::optional<KeyType> key_type_from_name(std::string_view name) {
  if (name == "ed25519") return KeyType::kEd25519;
  if (name == "p256") return KeyType::kP256;
  if (name == "rsa2048") return KeyType::kRsa2048;
  if (name == "rsa3072") return KeyType::kRsa3072;
  return std::nullopt;
}

std::string_view key_type_name(KeyType t) {
  switch (t) {
    case KeyType::kEd25519:
      return "ed25519";
    case KeyType::kP256:
      return "p256";
    case KeyType::kRsa2048:
      return "rsa2048";
    case KeyType::kRsa3072:
      return "rsa3072";
  }
  return "unknown";
}

std::string_view algorithm_name(Algorithm a) {
  switch (a) {
    case v1::Signed::ALGORITHM_ED25519:
      return "Ed25519";
    case v1::Signed::ALGORITHM_ECDSA_P256_SHA256:
      return "ECDSA-P256-SHA256";
    case v1::Signed::ALGORITHM_RSA_PSS_SHA256:
      return "RSA-PSS-SHA256";
    default:
      break;
  }
  return "unspecified";
}

std::array<std::uint8_t, 32> sha256(ByteView data) {
  ErrorQueueDrain drain;
  std::array<std::uint8_t, 32> out{};
  unsigned int len = 0;
  const EVP_MD* md = sha256_md();
  if (md == nullptr ||
      EVP_Digest(data_or_empty(data), data.size(), out.data(), &len, md, nullptr) != 1 ||
      len != out.size()) {
    // The contract has no failure path: a libcrypto that cannot hash cannot
    // authenticate anything, and a zero "digest" would be worse than stopping.
    std::abort();
  }
  return out;
}

Bytes random_bytes(std::size_t n) {
  ErrorQueueDrain drain;
  Bytes out(n);
  std::size_t done = 0;
  while (done < n) {
    const std::size_t chunk = std::min<std::size_t>(n - done, INT_MAX);
    // Predictable nonces or ids would silently break replay protection, so a
    // failing CSPRNG stops the process instead of returning anything.
    if (RAND_bytes(out.data() + done, static_cast<int>(chunk)) != 1) std::abort();
    done += chunk;
  }
  return out;
}

void PkeyDeleter::operator()(EVP_PKEY* p) const {
  EVP_PKEY_free(p);
}
void MdCtxDeleter::operator()(EVP_MD_CTX* p) const {
  EVP_MD_CTX_free(p);
}

namespace {

// Sets `ctx` up to verify with `key` under `alg`: the digest (none for
// Ed25519) and, for RSA, the PSS parameters.
bool init_verify(EVP_MD_CTX* ctx, EVP_PKEY* key, Algorithm alg) {
  const EVP_MD* md = alg == v1::Signed::ALGORITHM_ED25519 ? nullptr : sha256_md();
  if (alg != v1::Signed::ALGORITHM_ED25519 && md == nullptr) return false;
  EVP_PKEY_CTX* pctx = nullptr;  // owned by ctx
  if (EVP_DigestVerifyInit(ctx, &pctx, md, nullptr, key) != 1) return false;
  return alg != v1::Signed::ALGORITHM_RSA_PSS_SHA256 || set_pss_parameters(pctx);
}

}  // namespace

// --- PublicKey -------------------------------------------------------------

Result<PublicKey> PublicKey::from_spki_der(ByteView der) {
  ErrorQueueDrain drain;
  if (der.empty() || der.size() > kMaxSpkiDerSize) return v1::ERROR_MALFORMED;
  const unsigned char* p = der.data();
  PkeyPtr key(d2i_PUBKEY(nullptr, &p, static_cast<long>(der.size())));
  if (!key || p != der.data() + der.size()) return v1::ERROR_MALFORMED;
  auto shape = classify(key.get());
  if (!shape) return shape.error();
  // Only the canonical DER encoding: the key id hashes these bytes, so two
  // encodings of one key must not yield two ids.
  auto canonical = spki_der_of(key.get());
  if (!canonical || !std::equal(canonical->begin(), canonical->end(), der.begin(), der.end())) {
    return v1::ERROR_MALFORMED;
  }
  PublicKey out;
  out.key_ = std::move(key);
  out.alg_ = shape->algorithm;
  out.bits_ = shape->bits;
  out.der_ = std::move(*canonical);
  const auto digest = sha256(out.der_);
  std::copy_n(digest.begin(), kKeyIdSize, out.id_.begin());
  // Kept only if a copy of it works (some OpenSSL releases cannot copy every
  // signature context); without it verify() sets up a context per call.
  std::shared_ptr<EVP_MD_CTX> ready(EVP_MD_CTX_new(), MdCtxDeleter{});
  MdCtxPtr probe(EVP_MD_CTX_new());
  if (ready && probe && init_verify(ready.get(), out.key_.get(), out.alg_) &&
      EVP_MD_CTX_copy_ex(probe.get(), ready.get()) == 1) {
    out.verify_template_ = std::move(ready);
  }
  return out;
}

Result<PublicKey> PublicKey::from_pem(std::string_view pem) {
  ErrorQueueDrain drain;
  auto block = read_pem_block(pem);
  if (!block || block->label != "PUBLIC KEY") return v1::ERROR_MALFORMED;
  return from_spki_der(block->der);
}

std::string PublicKey::pem() const {
  ErrorQueueDrain drain;
  if (der_.empty()) return {};
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio(bio.get(), "PUBLIC KEY", "", der_.data(),
                            static_cast<long>(der_.size())) <= 0) {
    return {};
  }
  return bio_contents(bio.get()).value_or(std::string{});
}

PublicKey PublicKey::clone() const {
  PublicKey out;
  // A failed up-ref leaves out.key_ empty, and verify() then fails closed.
  if (key_ && EVP_PKEY_up_ref(key_.get()) == 1) out.key_.reset(key_.get());
  out.alg_ = alg_;
  out.bits_ = bits_;
  out.der_ = der_;
  out.id_ = id_;
  // Shared only when the key itself is (a copy made from another key's
  // template would verify with that key).
  if (out.key_) out.verify_template_ = verify_template_;
  return out;
}

Status PublicKey::verify(ByteView message, ByteView signature) const {
  ErrorQueueDrain drain;
  if (!key_) return v1::ERROR_BAD_SIGNATURE;
  Bytes ecdsa_der;
  ByteView sig = signature;
  const EVP_MD* md = sha256_md();
  switch (alg_) {
    case v1::Signed::ALGORITHM_ED25519:
      if (signature.size() != kEd25519SignatureSize) return v1::ERROR_BAD_SIGNATURE;
      md = nullptr;  // PureEdDSA hashes internally
      break;
    case v1::Signed::ALGORITHM_ECDSA_P256_SHA256: {
      auto der = ecdsa_raw_to_der(signature);
      if (!der) return v1::ERROR_BAD_SIGNATURE;
      ecdsa_der = std::move(*der);
      sig = ecdsa_der;
      break;
    }
    case v1::Signed::ALGORITHM_RSA_PSS_SHA256: {
      const int size = EVP_PKEY_get_size(key_.get());
      if (size <= 0 || signature.size() != static_cast<std::size_t>(size)) {
        return v1::ERROR_BAD_SIGNATURE;
      }
      break;
    }
    default:
      return v1::ERROR_BAD_SIGNATURE;
  }
  if (alg_ != v1::Signed::ALGORITHM_ED25519 && md == nullptr) return v1::ERROR_INTERNAL;
  MdCtxPtr ctx(EVP_MD_CTX_new());
  if (!ctx) return v1::ERROR_INTERNAL;
  // Copying the prepared context skips the algorithm fetch and the parameter
  // setup (for RSA-PSS about as much work as the hash of a command); a fresh
  // setup is the fallback.
  const bool copied =
      verify_template_ && EVP_MD_CTX_copy_ex(ctx.get(), verify_template_.get()) == 1;
  if (!copied && (EVP_MD_CTX_reset(ctx.get()) != 1 || !init_verify(ctx.get(), key_.get(), alg_))) {
    return v1::ERROR_INTERNAL;
  }
  // 1 is the only success; 0 is a mismatch and negative values are malformed
  // signatures (bad DER, wrong PSS salt length): all reject.
  if (EVP_DigestVerify(ctx.get(), sig.data(), sig.size(), data_or_empty(message), message.size()) !=
      1) {
    return v1::ERROR_BAD_SIGNATURE;
  }
  return {};
}

// --- PrivateKey ------------------------------------------------------------

Result<PrivateKey> PrivateKey::adopt(PkeyPtr key) {
  if (!key) return v1::ERROR_INTERNAL;
  auto der = spki_der_of(key.get());
  if (!der) return v1::ERROR_MALFORMED;
  auto pub = PublicKey::from_spki_der(*der);
  if (!pub) return pub.error();
  PrivateKey out;
  out.key_ = std::move(key);
  out.pub_ = std::move(pub.value());
  return out;
}

Result<PrivateKey> PrivateKey::generate(KeyType type) {
  ErrorQueueDrain drain;
  PkeyPtr key;
  switch (type) {
    case KeyType::kEd25519:
      key.reset(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519"));
      break;
    case KeyType::kP256:
      key.reset(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
      break;
    case KeyType::kRsa2048:
      key.reset(EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", static_cast<std::size_t>(2048)));
      break;
    case KeyType::kRsa3072:
      key.reset(EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", static_cast<std::size_t>(3072)));
      break;
  }
  if (!key) return v1::ERROR_INTERNAL;
  return adopt(std::move(key));
}

Result<PrivateKey> PrivateKey::from_pem(std::string_view pem, std::string_view passphrase) {
  ErrorQueueDrain drain;
  if (passphrase.size() > kMaxPassphraseSize) return v1::ERROR_MALFORMED;
  auto block = read_pem_block(pem);
  if (!block) return v1::ERROR_MALFORMED;
  // Wipe the decoded (possibly plaintext) key material whichever way we leave.
  struct Wipe {
    Bytes& b;
    ~Wipe() { OPENSSL_cleanse(b.data(), b.size()); }
  } wipe{block->der};

  const unsigned char* p = block->der.data();
  const unsigned char* const end = block->der.data() + block->der.size();
  const long len = static_cast<long>(block->der.size());
  P8InfoPtr p8inf;
  if (block->label == "ENCRYPTED PRIVATE KEY") {
    if (passphrase.empty()) return v1::ERROR_MALFORMED;
    X509SigPtr encrypted(d2i_X509_SIG(nullptr, &p, len));
    if (!encrypted || p != end) return v1::ERROR_MALFORMED;
    p8inf.reset(
        PKCS8_decrypt(encrypted.get(), passphrase.data(), static_cast<int>(passphrase.size())));
  } else if (block->label == "PRIVATE KEY") {
    // A passphrase for a plaintext key is a caller mistake worth surfacing: the
    // caller believes the key is protected at rest and it is not.
    if (!passphrase.empty()) return v1::ERROR_MALFORMED;
    p8inf.reset(d2i_PKCS8_PRIV_KEY_INFO(nullptr, &p, len));
    if (p8inf && p != end) return v1::ERROR_MALFORMED;
  } else {
    return v1::ERROR_MALFORMED;
  }
  if (!p8inf) return v1::ERROR_MALFORMED;
  PkeyPtr key(EVP_PKCS82PKEY(p8inf.get()));
  if (!key) return v1::ERROR_MALFORMED;
  return adopt(std::move(key));
}

Result<std::string> PrivateKey::pem(std::string_view passphrase) const {
  ErrorQueueDrain drain;
  if (!key_) return v1::ERROR_INTERNAL;
  if (passphrase.size() > kMaxPassphraseSize) return v1::ERROR_MALFORMED;
  P8InfoPtr p8inf(EVP_PKEY2PKCS8(key_.get()));
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!p8inf || !bio) return v1::ERROR_INTERNAL;
  if (passphrase.empty()) {
    if (PEM_write_bio_PKCS8_PRIV_KEY_INFO(bio.get(), p8inf.get()) != 1) return v1::ERROR_INTERNAL;
  } else {
    // PBES2: scrypt key derivation, AES-256-CBC, random salt and IV.
    X509AlgorPtr pbe(PKCS5_pbe2_set_scrypt(EVP_aes_256_cbc(), nullptr, 0, nullptr, kScryptN,
                                           kScryptR, kScryptP));
    if (!pbe) return v1::ERROR_INTERNAL;
    X509SigPtr encrypted(PKCS8_set0_pbe(passphrase.data(), static_cast<int>(passphrase.size()),
                                        p8inf.get(), pbe.get()));
    if (!encrypted) return v1::ERROR_INTERNAL;
    (void)pbe.release();  // owned by `encrypted` now
    if (PEM_write_bio_PKCS8(bio.get(), encrypted.get()) != 1) return v1::ERROR_INTERNAL;
  }
  auto text = bio_contents(bio.get());
  if (!text) return v1::ERROR_INTERNAL;
  return std::move(*text);
}

Result<Bytes> PrivateKey::sign(ByteView message) const {
  ErrorQueueDrain drain;
  if (!key_) return v1::ERROR_INTERNAL;
  const Algorithm alg = algorithm();
  const EVP_MD* md = alg == v1::Signed::ALGORITHM_ED25519 ? nullptr : sha256_md();
  if (alg != v1::Signed::ALGORITHM_ED25519 && md == nullptr) return v1::ERROR_INTERNAL;
  MdCtxPtr ctx(EVP_MD_CTX_new());
  EVP_PKEY_CTX* pctx = nullptr;  // owned by ctx
  if (!ctx || EVP_DigestSignInit(ctx.get(), &pctx, md, nullptr, key_.get()) != 1) {
    return v1::ERROR_INTERNAL;
  }
  if (alg == v1::Signed::ALGORITHM_RSA_PSS_SHA256 && !set_pss_parameters(pctx)) {
    return v1::ERROR_INTERNAL;
  }
  // One call with a buffer of the maximum size: a separate length query would
  // feed the message twice for the hash-then-sign algorithms.
  const int max_size = EVP_PKEY_get_size(key_.get());
  if (max_size <= 0) return v1::ERROR_INTERNAL;
  Bytes sig(static_cast<std::size_t>(max_size));
  std::size_t sig_len = sig.size();
  if (EVP_DigestSign(ctx.get(), sig.data(), &sig_len, data_or_empty(message), message.size()) !=
          1 ||
      sig_len > sig.size()) {
    return v1::ERROR_INTERNAL;
  }
  sig.resize(sig_len);
  if (alg == v1::Signed::ALGORITHM_ECDSA_P256_SHA256) {
    auto raw = ecdsa_der_to_raw(sig);
    if (!raw) return v1::ERROR_INTERNAL;
    return std::move(*raw);
  }
  return sig;
}

}  // namespace tollgate::crypto
