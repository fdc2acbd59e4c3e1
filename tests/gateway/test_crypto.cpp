// Keys, signatures, encodings and byte helpers (gateway/crypto.hpp, gateway/bytes.hpp).
// Raw OpenSSL appears here only to build independent references: RFC 8032 keys
// from their seeds, foreign signatures, unsupported key types.
#include <doctest/doctest.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "gateway/bytes.hpp"
#include "gateway/crypto.hpp"

using namespace tollgate;
using crypto::KeyType;
using crypto::PrivateKey;
using crypto::PublicKey;

namespace {

struct BioFree {
  void operator()(BIO* p) const { BIO_free_all(p); }
};
struct PkeyCtxFree {
  void operator()(EVP_PKEY_CTX* p) const { EVP_PKEY_CTX_free(p); }
};
struct MdCtxFree {
  void operator()(EVP_MD_CTX* p) const { EVP_MD_CTX_free(p); }
};
struct BnFree {
  void operator()(BIGNUM* p) const { BN_free(p); }
};
struct ParamBldFree {
  void operator()(OSSL_PARAM_BLD* p) const { OSSL_PARAM_BLD_free(p); }
};
struct ParamFree {
  void operator()(OSSL_PARAM* p) const { OSSL_PARAM_free(p); }
};
struct EcdsaSigFree {
  void operator()(ECDSA_SIG* p) const { ECDSA_SIG_free(p); }
};
using BioPtr = std::unique_ptr<BIO, BioFree>;
using PkeyCtxPtr = std::unique_ptr<EVP_PKEY_CTX, PkeyCtxFree>;
using MdCtxPtr = std::unique_ptr<EVP_MD_CTX, MdCtxFree>;
using BnPtr = std::unique_ptr<BIGNUM, BnFree>;

const KeyType kAllKeyTypes[] = {KeyType::kEd25519, KeyType::kP256, KeyType::kRsa2048,
                                KeyType::kRsa3072};

// Key generation (RSA-3072 especially) is slow; one key per type per run.
const PrivateKey& test_key(KeyType type) {
  static std::map<KeyType, PrivateKey> keys;
  auto it = keys.find(type);
  if (it == keys.end()) {
    auto key = PrivateKey::generate(type);
    REQUIRE(key.ok());
    it = keys.emplace(type, std::move(key.value())).first;
  }
  return it->second;
}

Bytes hex(std::string_view text) {
  auto b = from_hex(text);
  REQUIRE(b.has_value());
  return *b;
}

Bytes bytes_of(std::string_view text) {
  const ByteView b = as_bytes(text);
  return Bytes(b.begin(), b.end());
}

Bytes der_of(EVP_PKEY* key) {
  const int len = i2d_PUBKEY(key, nullptr);
  REQUIRE(len > 0);
  Bytes der(static_cast<std::size_t>(len));
  unsigned char* p = der.data();
  REQUIRE(i2d_PUBKEY(key, &p) == len);
  return der;
}

std::string pkcs8_pem_of(EVP_PKEY* key) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  REQUIRE(bio);
  REQUIRE(PEM_write_bio_PKCS8PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) ==
          1);
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio.get(), &data);
  REQUIRE(len > 0);
  return std::string(data, static_cast<std::size_t>(len));
}

// EVP_PKEY_Q_keygen's variadic tail depends on the type: nothing for the
// Edwards and Montgomery curves, a curve name for "EC", a size_t for RSA.
crypto::PkeyPtr openssl_keygen(const char* type) {
  crypto::PkeyPtr key(EVP_PKEY_Q_keygen(nullptr, nullptr, type));
  REQUIRE(key);
  return key;
}
crypto::PkeyPtr openssl_ec_keygen(const char* curve) {
  crypto::PkeyPtr key(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", curve));
  REQUIRE(key);
  return key;
}
crypto::PkeyPtr openssl_rsa_keygen(std::size_t bits) {
  crypto::PkeyPtr key(EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", bits));
  REQUIRE(key);
  return key;
}

crypto::PkeyPtr openssl_rsa_pss_keygen() {
  PkeyCtxPtr ctx(EVP_PKEY_CTX_new_from_name(nullptr, "RSA-PSS", nullptr));
  REQUIRE(ctx);
  REQUIRE(EVP_PKEY_keygen_init(ctx.get()) == 1);
  REQUIRE(EVP_PKEY_CTX_set_rsa_keygen_bits(ctx.get(), 2048) > 0);
  EVP_PKEY* raw = nullptr;
  REQUIRE(EVP_PKEY_generate(ctx.get(), &raw) == 1);
  return crypto::PkeyPtr(raw);
}

// An RSA public key straight from (n, e), so tests can reach sizes and
// exponents no key generator would produce.
crypto::PkeyPtr rsa_public_from(const BIGNUM* n, const BIGNUM* e) {
  std::unique_ptr<OSSL_PARAM_BLD, ParamBldFree> bld(OSSL_PARAM_BLD_new());
  REQUIRE(bld);
  REQUIRE(OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_N, n) == 1);
  REQUIRE(OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_E, e) == 1);
  std::unique_ptr<OSSL_PARAM, ParamFree> params(OSSL_PARAM_BLD_to_param(bld.get()));
  REQUIRE(params);
  PkeyCtxPtr ctx(EVP_PKEY_CTX_new_from_name(nullptr, "RSA", nullptr));
  REQUIRE(ctx);
  REQUIRE(EVP_PKEY_fromdata_init(ctx.get()) == 1);
  EVP_PKEY* raw = nullptr;
  REQUIRE(EVP_PKEY_fromdata(ctx.get(), &raw, EVP_PKEY_PUBLIC_KEY, params.get()) == 1);
  return crypto::PkeyPtr(raw);
}

crypto::PkeyPtr rsa_public_random(int bits, unsigned long exponent) {
  BnPtr n(BN_new());
  BnPtr e(BN_new());
  REQUIRE((n && e));
  REQUIRE(BN_rand(n.get(), bits, BN_RAND_TOP_ONE, BN_RAND_BOTTOM_ODD) == 1);
  REQUIRE(BN_set_word(e.get(), exponent) == 1);
  return rsa_public_from(n.get(), e.get());
}

// The public half of `key` as an OpenSSL object, for reference computations.
crypto::PkeyPtr openssl_public(const PublicKey& key) {
  const unsigned char* p = key.spki_der().data();
  crypto::PkeyPtr pkey(d2i_PUBKEY(nullptr, &p, static_cast<long>(key.spki_der().size())));
  REQUIRE(pkey);
  return pkey;
}

// Signs with raw OpenSSL: RSA-PSS with the given salt length and MGF1 hash.
Bytes openssl_pss_sign(EVP_PKEY* key, ByteView message, int salt_len, const EVP_MD* mgf1) {
  MdCtxPtr ctx(EVP_MD_CTX_new());
  EVP_PKEY_CTX* pctx = nullptr;
  REQUIRE(EVP_DigestSignInit(ctx.get(), &pctx, EVP_sha256(), nullptr, key) == 1);
  REQUIRE(EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) > 0);
  REQUIRE(EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, mgf1) > 0);
  REQUIRE(EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, salt_len) > 0);
  Bytes sig(static_cast<std::size_t>(EVP_PKEY_get_size(key)));
  std::size_t len = sig.size();
  REQUIRE(EVP_DigestSign(ctx.get(), sig.data(), &len, message.data(), message.size()) == 1);
  sig.resize(len);
  return sig;
}

bool openssl_pss_verify(EVP_PKEY* key, ByteView message, ByteView sig, int salt_len) {
  MdCtxPtr ctx(EVP_MD_CTX_new());
  EVP_PKEY_CTX* pctx = nullptr;
  REQUIRE(EVP_DigestVerifyInit(ctx.get(), &pctx, EVP_sha256(), nullptr, key) == 1);
  REQUIRE(EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) > 0);
  REQUIRE(EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, EVP_sha256()) > 0);
  REQUIRE(EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, salt_len) > 0);
  const bool ok =
      EVP_DigestVerify(ctx.get(), sig.data(), sig.size(), message.data(), message.size()) == 1;
  ERR_clear_error();
  return ok;
}

// --- RFC 8032 vector file --------------------------------------------------

struct Ed25519Vector {
  std::string name;
  Bytes secret, public_key, message, signature;
};

std::string trim(std::string s) {
  const auto first = s.find_first_not_of(" \t\r");
  if (first == std::string::npos) return {};
  const auto last = s.find_last_not_of(" \t\r");
  return s.substr(first, last - first + 1);
}

std::vector<Ed25519Vector> load_rfc8032_vectors() {
  const char* dir = std::getenv("TOLLGATE_VECTORS");
  REQUIRE_MESSAGE(dir != nullptr, "TOLLGATE_VECTORS is not set; run this test through ctest");
  const std::string path = std::string(dir) + "/rfc8032_ed25519.txt";
  std::ifstream in(path);
  REQUIRE_MESSAGE(in.good(), "cannot open " << path);
  std::vector<Ed25519Vector> out;
  std::string line;
  while (std::getline(in, line)) {
    line = trim(line);
    if (line.empty() || line[0] == '#') continue;
    const auto eq = line.find('=');
    REQUIRE_MESSAGE(eq != std::string::npos, "bad vector line: " << line);
    const std::string key = trim(line.substr(0, eq));
    const std::string value = trim(line.substr(eq + 1));
    if (key == "TEST") {
      out.push_back({value, {}, {}, {}, {}});
      continue;
    }
    REQUIRE_MESSAGE(!out.empty(), "field before the first TEST: " << line);
    Ed25519Vector& v = out.back();
    if (key == "SECRET")
      v.secret = hex(value);
    else if (key == "PUBLIC")
      v.public_key = hex(value);
    else if (key == "MESSAGE")
      v.message = hex(value);
    else if (key == "SIGNATURE")
      v.signature = hex(value);
    else
      FAIL("unknown field " << key);
  }
  return out;
}

}  // namespace

// --- bytes.hpp -------------------------------------------------------------

TEST_CASE("hex encodes lowercase and decodes either case") {
  const Bytes b{0x00, 0x7f, 0xab, 0xff};
  CHECK(to_hex(b) == "007fabff");
  CHECK(from_hex("007FabfF") == b);
  CHECK(from_hex("")->empty());
  CHECK(to_hex({}).empty());
}

TEST_CASE("hex with odd length or a non-hex digit is rejected") {
  CHECK_FALSE(from_hex("abc").has_value());
  CHECK_FALSE(from_hex("0g").has_value());
  CHECK_FALSE(from_hex(" 00").has_value());
  CHECK_FALSE(from_hex("0x00").has_value());
}

TEST_CASE("constant-time comparison compares contents and sizes") {
  const Bytes a{1, 2, 3};
  CHECK(constant_time_equal(a, Bytes{1, 2, 3}));
  CHECK_FALSE(constant_time_equal(a, Bytes{1, 2, 4}));
  CHECK_FALSE(constant_time_equal(a, Bytes{1, 2}));
  CHECK(constant_time_equal(Bytes{}, Bytes{}));
}

TEST_CASE("uuid text round-trips through 16 bytes in canonical lowercase form") {
  const auto bytes = uuid_from_string("0F1E2D3C-4B5A-6978-8796-A5B4C3D2E1F0");
  REQUIRE(bytes.has_value());
  CHECK(*bytes == hex("0f1e2d3c4b5a69788796a5b4c3d2e1f0"));
  CHECK(uuid_to_string(*bytes) == "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0");
}

TEST_CASE("malformed uuid text is rejected and short uuids print as empty") {
  for (const char* bad :
       {"", "0f1e2d3c4b5a69788796a5b4c3d2e1f0", "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f",
        "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f00", "{0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f}",
        "0f1e2d3c-4b5a-6978-8796_a5b4c3d2e1f0", "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1fg",
        "0f1e2d3c-4b5a-697-88796-a5b4c3d2e1f0"}) {
    CAPTURE(bad);
    CHECK_FALSE(uuid_from_string(bad).has_value());
  }
  CHECK(uuid_to_string(Bytes(15, 0)).empty());
  CHECK(uuid_to_string(Bytes(17, 0)).empty());
}

// --- names, hashes, randomness ---------------------------------------------

TEST_CASE("key type names round-trip and unknown names are refused") {
  for (KeyType t : kAllKeyTypes) CHECK(crypto::key_type_from_name(crypto::key_type_name(t)) == t);
  CHECK_FALSE(crypto::key_type_from_name("rsa1024").has_value());
  CHECK_FALSE(crypto::key_type_from_name("Ed25519").has_value());
  CHECK(crypto::algorithm_name(v1::Signed::ALGORITHM_ED25519) == "Ed25519");
  CHECK(crypto::algorithm_name(v1::Signed::ALGORITHM_ECDSA_P256_SHA256) == "ECDSA-P256-SHA256");
  CHECK(crypto::algorithm_name(v1::Signed::ALGORITHM_RSA_PSS_SHA256) == "RSA-PSS-SHA256");
}

TEST_CASE("sha256 matches the FIPS 180-2 known answers") {
  CHECK(to_hex(crypto::sha256(as_bytes("abc"))) ==
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(to_hex(crypto::sha256({})) ==
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST_CASE("random bytes have the requested length and do not repeat") {
  CHECK(crypto::random_bytes(0).empty());
  const Bytes a = crypto::random_bytes(32);
  const Bytes b = crypto::random_bytes(32);
  CHECK(a.size() == 32);
  CHECK(a != b);
}

// --- RFC 8032 known answers ------------------------------------------------

TEST_CASE(
    "RFC 8032 Ed25519 vectors: our wrapper derives the public key, signs and verifies exactly") {
  const auto vectors = load_rfc8032_vectors();
  std::set<std::string> names;
  for (const auto& v : vectors) names.insert(v.name);
  CHECK(names == std::set<std::string>{"1", "2", "3", "1024", "SHA(abc)"});

  for (const auto& v : vectors) {
    CAPTURE(v.name);
    REQUIRE(v.secret.size() == 32);
    REQUIRE(v.public_key.size() == 32);
    REQUIRE(v.signature.size() == 64);

    crypto::PkeyPtr raw(
        EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, nullptr, v.secret.data(), v.secret.size()));
    REQUIRE(raw);
    Bytes derived(32);
    std::size_t derived_len = derived.size();
    REQUIRE(EVP_PKEY_get_raw_public_key(raw.get(), derived.data(), &derived_len) == 1);
    CHECK(derived == v.public_key);

    auto key = PrivateKey::from_pem(pkcs8_pem_of(raw.get()));
    REQUIRE(key.ok());
    CHECK(key->algorithm() == v1::Signed::ALGORITHM_ED25519);
    const Bytes& spki = key->public_key().spki_der();
    REQUIRE(spki.size() == 44);
    CHECK(Bytes(spki.end() - 32, spki.end()) == v.public_key);

    auto sig = key->sign(v.message);
    REQUIRE(sig.ok());
    CHECK(to_hex(*sig) == to_hex(v.signature));

    // Verification through our PublicKey, built from nothing but the RFC's bytes.
    Bytes rfc_spki = hex("302a300506032b6570032100");
    rfc_spki.insert(rfc_spki.end(), v.public_key.begin(), v.public_key.end());
    auto pub = PublicKey::from_spki_der(rfc_spki);
    REQUIRE(pub.ok());
    CHECK(pub->verify(v.message, v.signature).ok());
    Bytes bad = v.signature;
    bad[10] ^= 0x01;
    CHECK(pub->verify(v.message, bad).error() == v1::ERROR_BAD_SIGNATURE);
  }
}

// --- sign / verify ---------------------------------------------------------

TEST_CASE("sign then verify round-trips for every key type") {
  const Bytes message = bytes_of("charge one use");
  for (KeyType t : kAllKeyTypes) {
    CAPTURE(crypto::key_type_name(t));
    const PrivateKey& key = test_key(t);
    auto sig = key.sign(message);
    REQUIRE(sig.ok());
    CHECK(key.public_key().verify(message, *sig).ok());
    CHECK(key.public_key().verify(as_bytes("charge two uses"), *sig).error() ==
          v1::ERROR_BAD_SIGNATURE);
  }
}

TEST_CASE("keys report their algorithm and size") {
  CHECK(test_key(KeyType::kEd25519).algorithm() == v1::Signed::ALGORITHM_ED25519);
  CHECK(test_key(KeyType::kEd25519).public_key().bits() == 256);
  CHECK(test_key(KeyType::kP256).algorithm() == v1::Signed::ALGORITHM_ECDSA_P256_SHA256);
  CHECK(test_key(KeyType::kP256).public_key().bits() == 256);
  CHECK(test_key(KeyType::kRsa2048).algorithm() == v1::Signed::ALGORITHM_RSA_PSS_SHA256);
  CHECK(test_key(KeyType::kRsa2048).public_key().bits() == 2048);
  CHECK(test_key(KeyType::kRsa3072).algorithm() == v1::Signed::ALGORITHM_RSA_PSS_SHA256);
  CHECK(test_key(KeyType::kRsa3072).public_key().bits() == 3072);
}

TEST_CASE("signature sizes: Ed25519 and ECDSA 64 bytes, RSA the modulus size") {
  const Bytes message{1, 2, 3};
  CHECK(test_key(KeyType::kEd25519).sign(message)->size() == 64);
  // About one signature in 128 has an r or s below 2^248; those still pad to
  // 32 + 32 bytes (and verify).
  for (int i = 0; i < 500; ++i) {
    const Bytes sig = test_key(KeyType::kP256).sign(message).value();
    REQUIRE(sig.size() == 64);
    if (sig[0] == 0 || sig[32] == 0) {
      CHECK(test_key(KeyType::kP256).public_key().verify(message, sig).ok());
    }
  }
  CHECK(test_key(KeyType::kRsa2048).sign(message)->size() == 256);
  CHECK(test_key(KeyType::kRsa3072).sign(message)->size() == 384);
}

TEST_CASE("every single-bit flip in any byte of a signature is rejected") {
  const Bytes message = crypto::random_bytes(100);
  for (KeyType t : kAllKeyTypes) {
    CAPTURE(crypto::key_type_name(t));
    const PublicKey& pub = test_key(t).public_key();
    const Bytes sig = test_key(t).sign(message).value();
    int accepted = 0;
    for (std::size_t i = 0; i < sig.size(); ++i) {
      for (std::uint8_t mask : {0x01, 0x80}) {
        Bytes bad = sig;
        bad[i] ^= mask;
        if (pub.verify(message, bad).ok()) ++accepted;
      }
    }
    CHECK(accepted == 0);
  }
}

TEST_CASE("every single-bit flip in any byte of the message is rejected") {
  const Bytes message = crypto::random_bytes(100);
  for (KeyType t : kAllKeyTypes) {
    CAPTURE(crypto::key_type_name(t));
    const PublicKey& pub = test_key(t).public_key();
    const Bytes sig = test_key(t).sign(message).value();
    int accepted = 0;
    for (std::size_t i = 0; i < message.size(); ++i) {
      for (std::uint8_t mask : {0x01, 0x80}) {
        Bytes bad = message;
        bad[i] ^= mask;
        if (pub.verify(bad, sig).ok()) ++accepted;
      }
    }
    CHECK(accepted == 0);
  }
}

TEST_CASE("truncated, extended or empty signatures are rejected") {
  const Bytes message{9, 9, 9};
  for (KeyType t : kAllKeyTypes) {
    CAPTURE(crypto::key_type_name(t));
    const PublicKey& pub = test_key(t).public_key();
    const Bytes sig = test_key(t).sign(message).value();
    CHECK(pub.verify(message, Bytes(sig.begin(), sig.end() - 1)).error() ==
          v1::ERROR_BAD_SIGNATURE);
    Bytes longer = sig;
    longer.push_back(0);
    CHECK(pub.verify(message, longer).error() == v1::ERROR_BAD_SIGNATURE);
    CHECK(pub.verify(message, {}).error() == v1::ERROR_BAD_SIGNATURE);
  }
}

TEST_CASE("a signature from one key does not verify under another key of the same type") {
  const Bytes message{4, 5, 6};
  for (KeyType t : {KeyType::kEd25519, KeyType::kP256, KeyType::kRsa2048}) {
    CAPTURE(crypto::key_type_name(t));
    auto other = PrivateKey::generate(t);
    REQUIRE(other.ok());
    CHECK(test_key(t).public_key().verify(message, other->sign(message).value()).error() ==
          v1::ERROR_BAD_SIGNATURE);
  }
}

TEST_CASE("ECDSA signature is raw r||s that OpenSSL accepts once re-encoded as DER") {
  const Bytes message = bytes_of("raw r||s");
  const PrivateKey& key = test_key(KeyType::kP256);
  const Bytes raw = key.sign(message).value();
  REQUIRE(raw.size() == 64);

  std::unique_ptr<ECDSA_SIG, EcdsaSigFree> sig(ECDSA_SIG_new());
  BIGNUM* r = BN_bin2bn(raw.data(), 32, nullptr);
  BIGNUM* s = BN_bin2bn(raw.data() + 32, 32, nullptr);
  REQUIRE((sig && r && s));
  REQUIRE(ECDSA_SIG_set0(sig.get(), r, s) == 1);
  const int der_len = i2d_ECDSA_SIG(sig.get(), nullptr);
  REQUIRE(der_len > 0);
  Bytes der(static_cast<std::size_t>(der_len));
  unsigned char* p = der.data();
  REQUIRE(i2d_ECDSA_SIG(sig.get(), &p) == der_len);

  auto pkey = openssl_public(key.public_key());
  MdCtxPtr ctx(EVP_MD_CTX_new());
  REQUIRE(EVP_DigestVerifyInit(ctx.get(), nullptr, EVP_sha256(), nullptr, pkey.get()) == 1);
  CHECK(EVP_DigestVerify(ctx.get(), der.data(), der.size(), message.data(), message.size()) == 1);

  // The DER form itself is not our wire encoding.
  CHECK(key.public_key().verify(message, der).error() == v1::ERROR_BAD_SIGNATURE);
}

TEST_CASE("RSA-PSS signatures use SHA-256, MGF1-SHA-256 and a 32-byte salt") {
  const Bytes message = bytes_of("salt length");
  const PrivateKey& key = test_key(KeyType::kRsa2048);
  auto pkey = openssl_public(key.public_key());
  const Bytes ours = key.sign(message).value();
  CHECK(openssl_pss_verify(pkey.get(), message, ours, 32));
  CHECK_FALSE(openssl_pss_verify(pkey.get(), message, ours, 20));
  CHECK_FALSE(openssl_pss_verify(pkey.get(), message, ours, 64));
}

TEST_CASE("RSA-PSS verification insists on salt 32 and MGF1-SHA-256") {
  const Bytes message = bytes_of("salt length");
  // A private key OpenSSL can sign with directly: round-trip ours through PEM.
  const PrivateKey& key = test_key(KeyType::kRsa2048);
  const std::string pem = key.pem().value();
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  crypto::PkeyPtr priv(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  REQUIRE(priv);
  const PublicKey& pub = key.public_key();

  CHECK(pub.verify(message, openssl_pss_sign(priv.get(), message, 32, EVP_sha256())).ok());
  CHECK(pub.verify(message, openssl_pss_sign(priv.get(), message, 20, EVP_sha256())).error() ==
        v1::ERROR_BAD_SIGNATURE);
  CHECK(pub.verify(message, openssl_pss_sign(priv.get(), message, 0, EVP_sha256())).error() ==
        v1::ERROR_BAD_SIGNATURE);
  CHECK(
      pub.verify(message, openssl_pss_sign(priv.get(), message, RSA_PSS_SALTLEN_MAX, EVP_sha256()))
          .error() == v1::ERROR_BAD_SIGNATURE);
  CHECK(pub.verify(message, openssl_pss_sign(priv.get(), message, 32, EVP_sha1())).error() ==
        v1::ERROR_BAD_SIGNATURE);
}

// --- encodings, key ids ----------------------------------------------------

TEST_CASE("key id is SHA-256 over the SPKI DER truncated to 16 bytes, stable across reloads") {
  for (KeyType t : kAllKeyTypes) {
    CAPTURE(crypto::key_type_name(t));
    const PublicKey& pub = test_key(t).public_key();
    const Bytes& der = pub.spki_der();
    // Reference digest computed with OpenSSL directly, not through our sha256().
    unsigned char digest[32];
    unsigned int len = 0;
    REQUIRE(EVP_Digest(der.data(), der.size(), digest, &len, EVP_sha256(), nullptr) == 1);
    CHECK(Bytes(pub.id().begin(), pub.id().end()) == Bytes(digest, digest + 16));
    CHECK(der == der_of(openssl_public(pub).get()));

    CHECK(PublicKey::from_spki_der(der)->id() == pub.id());
    CHECK(PublicKey::from_pem(pub.pem())->id() == pub.id());
    CHECK(PrivateKey::from_pem(test_key(t).pem().value())->public_key().id() == pub.id());
    CHECK(pub.clone().id() == pub.id());
  }
  CHECK(test_key(KeyType::kEd25519).public_key().id() !=
        test_key(KeyType::kP256).public_key().id());
}

TEST_CASE("public key PEM round-trips as SPKI") {
  for (KeyType t : kAllKeyTypes) {
    CAPTURE(crypto::key_type_name(t));
    const PublicKey& pub = test_key(t).public_key();
    const std::string pem = pub.pem();
    CHECK(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
    auto back = PublicKey::from_pem(pem);
    REQUIRE(back.ok());
    CHECK(back->spki_der() == pub.spki_der());
    CHECK(back->algorithm() == pub.algorithm());
    CHECK(back->bits() == pub.bits());
  }
}

TEST_CASE("private key PEM without passphrase round-trips as unencrypted PKCS#8") {
  const Bytes message{7, 7, 7};
  for (KeyType t : kAllKeyTypes) {
    CAPTURE(crypto::key_type_name(t));
    const std::string pem = test_key(t).pem().value();
    CHECK(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
    auto back = PrivateKey::from_pem(pem);
    REQUIRE(back.ok());
    CHECK(back->public_key().id() == test_key(t).public_key().id());
    CHECK(test_key(t).public_key().verify(message, back->sign(message).value()).ok());
  }
}

TEST_CASE("private key PEM with passphrase round-trips and is encrypted PKCS#8") {
  const Bytes message{8, 8, 8};
  for (KeyType t : kAllKeyTypes) {
    CAPTURE(crypto::key_type_name(t));
    const std::string pem = test_key(t).pem("correct horse").value();
    CHECK(pem.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----\n"));
    auto back = PrivateKey::from_pem(pem, "correct horse");
    REQUIRE(back.ok());
    CHECK(back->public_key().id() == test_key(t).public_key().id());
    CHECK(test_key(t).public_key().verify(message, back->sign(message).value()).ok());
  }
}

TEST_CASE("encrypted private key is refused with a wrong or missing passphrase") {
  const std::string pem = test_key(KeyType::kEd25519).pem("correct horse").value();
  CHECK(PrivateKey::from_pem(pem, "correct hors").error() == v1::ERROR_MALFORMED);
  CHECK(PrivateKey::from_pem(pem, "correct horse ").error() == v1::ERROR_MALFORMED);
  CHECK(PrivateKey::from_pem(pem).error() == v1::ERROR_MALFORMED);
  CHECK(ERR_peek_error() == 0);
}

TEST_CASE("a passphrase offered for an unencrypted private key is refused") {
  const std::string pem = test_key(KeyType::kEd25519).pem().value();
  CHECK(PrivateKey::from_pem(pem, "secret").error() == v1::ERROR_MALFORMED);
}

TEST_CASE("encrypted key PEM is readable by OpenSSL with the same passphrase") {
  const std::string pem = test_key(KeyType::kP256).pem("interop").value();
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  char pass[] = "interop";
  crypto::PkeyPtr priv(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, pass));
  REQUIRE(priv);
  CHECK(der_of(priv.get()) == test_key(KeyType::kP256).public_key().spki_der());
}

TEST_CASE("legacy, public and garbage PEM are refused as private keys") {
  crypto::PkeyPtr rsa = openssl_rsa_keygen(2048);
  BioPtr bio(BIO_new(BIO_s_mem()));
  REQUIRE(PEM_write_bio_PrivateKey_traditional(bio.get(), rsa.get(), nullptr, nullptr, 0, nullptr,
                                               nullptr) == 1);
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio.get(), &data);
  const std::string legacy(data, static_cast<std::size_t>(len));
  REQUIRE(legacy.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
  CHECK(PrivateKey::from_pem(legacy).error() == v1::ERROR_MALFORMED);
  CHECK(PrivateKey::from_pem(test_key(KeyType::kEd25519).public_key().pem()).error() ==
        v1::ERROR_MALFORMED);
  CHECK(PrivateKey::from_pem("").error() == v1::ERROR_MALFORMED);
  CHECK(PrivateKey::from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
            .error() == v1::ERROR_MALFORMED);
  CHECK(PublicKey::from_pem(test_key(KeyType::kEd25519).pem().value()).error() ==
        v1::ERROR_MALFORMED);
  CHECK(PublicKey::from_pem("not pem at all").error() == v1::ERROR_MALFORMED);
  CHECK(ERR_peek_error() == 0);
}

TEST_CASE("unsupported key types and curves are malformed") {
  CHECK(PublicKey::from_spki_der(der_of(openssl_ec_keygen("P-384").get())).error() ==
        v1::ERROR_MALFORMED);
  CHECK(PublicKey::from_spki_der(der_of(openssl_ec_keygen("secp256k1").get())).error() ==
        v1::ERROR_MALFORMED);
  CHECK(PublicKey::from_spki_der(der_of(openssl_keygen("X25519").get())).error() ==
        v1::ERROR_MALFORMED);
  CHECK(PublicKey::from_spki_der(der_of(openssl_keygen("ED448").get())).error() ==
        v1::ERROR_MALFORMED);
  // RSASSA-PSS SPKI: the same modulus under a second encoding (and key id).
  CHECK(PublicKey::from_spki_der(der_of(openssl_rsa_pss_keygen().get())).error() ==
        v1::ERROR_MALFORMED);
  // Unsupported private keys are refused too.
  CHECK(PrivateKey::from_pem(pkcs8_pem_of(openssl_ec_keygen("P-384").get())).error() ==
        v1::ERROR_MALFORMED);
}

TEST_CASE("a compressed P-256 point is refused so each key has one id") {
  crypto::PkeyPtr key = openssl_ec_keygen("P-256");
  REQUIRE(EVP_PKEY_set_utf8_string_param(key.get(), OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT,
                                         "compressed") == 1);
  const Bytes der = der_of(key.get());
  CHECK(der.size() == 59);
  CHECK(PublicKey::from_spki_der(der).error() == v1::ERROR_MALFORMED);
}

TEST_CASE("a P-256 point off the curve is refused") {
  Bytes der = test_key(KeyType::kP256).public_key().spki_der();
  der.back() ^= 0x01;  // the last byte of y
  CHECK(PublicKey::from_spki_der(der).error() == v1::ERROR_MALFORMED);
}

TEST_CASE("SPKI with trailing bytes, truncation or junk is malformed") {
  const Bytes der = test_key(KeyType::kEd25519).public_key().spki_der();
  Bytes longer = der;
  longer.push_back(0);
  CHECK(PublicKey::from_spki_der(longer).error() == v1::ERROR_MALFORMED);
  CHECK(PublicKey::from_spki_der(ByteView(der).first(der.size() - 1)).error() ==
        v1::ERROR_MALFORMED);
  CHECK(PublicKey::from_spki_der({}).error() == v1::ERROR_MALFORMED);
  CHECK(PublicKey::from_spki_der(crypto::random_bytes(44)).error() == v1::ERROR_MALFORMED);
  CHECK(ERR_peek_error() == 0);
}

TEST_CASE("RSA public keys: 4096 bits accepted, larger or with a bad exponent malformed") {
  auto big = PublicKey::from_spki_der(der_of(rsa_public_random(4096, 65537).get()));
  REQUIRE(big.ok());
  CHECK(big->bits() == 4096);
  CHECK(PublicKey::from_spki_der(der_of(rsa_public_random(4097, 65537).get())).error() ==
        v1::ERROR_MALFORMED);
  CHECK(PublicKey::from_spki_der(der_of(rsa_public_random(2048, 65536).get())).error() ==
        v1::ERROR_MALFORMED);
  CHECK(PublicKey::from_spki_der(der_of(rsa_public_random(2048, 1).get())).error() ==
        v1::ERROR_MALFORMED);
}

TEST_CASE("an RSA-1024 key parses; refusing it is the policy's job") {
  crypto::PkeyPtr small = openssl_rsa_keygen(1024);
  auto weak = PublicKey::from_spki_der(der_of(small.get()));
  REQUIRE(weak.ok());
  CHECK(weak->bits() == 1024);
  CHECK(weak->algorithm() == v1::Signed::ALGORITHM_RSA_PSS_SHA256);
}

TEST_CASE("default-constructed keys fail closed") {
  const PublicKey empty_pub;
  CHECK(empty_pub.verify(as_bytes("x"), Bytes(64, 0)).error() == v1::ERROR_BAD_SIGNATURE);
  CHECK(empty_pub.pem().empty());
  const PrivateKey empty_priv;
  CHECK(empty_priv.sign(as_bytes("x")).error() == v1::ERROR_INTERNAL);
  CHECK(empty_priv.pem().error() == v1::ERROR_INTERNAL);
}

TEST_CASE("a cloned public key verifies like the original and outlives it") {
  const Bytes message{1};
  const Bytes sig = test_key(KeyType::kP256).sign(message).value();
  PublicKey copy;
  {
    auto original = PublicKey::from_spki_der(test_key(KeyType::kP256).public_key().spki_der());
    REQUIRE(original.ok());
    copy = original->clone();
  }
  CHECK(copy.verify(message, sig).ok());
  CHECK(copy.algorithm() == v1::Signed::ALGORITHM_ECDSA_P256_SHA256);
}
