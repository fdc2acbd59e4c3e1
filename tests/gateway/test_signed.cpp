// Typed signed objects (gateway/signed.hpp): domain labels, envelope parsing,
// the verification order, and THREATS rows A5, A10, A11 and A17 at the
// signature layer.
#include <doctest/doctest.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <map>
#include <set>
#include <string>

#include "gateway/crypto.hpp"
#include "gateway/signed.hpp"

using namespace tollgate;
using crypto::KeyType;
using crypto::PrivateKey;
using crypto::PublicKey;

namespace {

const ObjectType kAllTypes[] = {v1::Signed::TYPE_CLOUD_KEY_AUTHORIZATION,
                                v1::Signed::TYPE_DEVICE_TOKEN,
                                v1::Signed::TYPE_COMMAND_REQUEST,
                                v1::Signed::TYPE_COMMAND_RESPONSE,
                                v1::Signed::TYPE_AUDIT_EXPORT,
                                v1::Signed::TYPE_STATUS_RESPONSE};
const KeyType kAllKeyTypes[] = {KeyType::kEd25519, KeyType::kP256, KeyType::kRsa2048,
                                KeyType::kRsa3072};

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

// An RSA-1024 key, made with raw OpenSSL since PrivateKey::generate refuses to.
PrivateKey rsa1024_key() {
  crypto::PkeyPtr raw(EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", static_cast<std::size_t>(1024)));
  REQUIRE(raw);
  std::unique_ptr<BIO, decltype(&BIO_free_all)> bio(BIO_new(BIO_s_mem()), &BIO_free_all);
  REQUIRE(PEM_write_bio_PKCS8PrivateKey(bio.get(), raw.get(), nullptr, nullptr, 0, nullptr,
                                        nullptr) == 1);
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio.get(), &data);
  auto key = PrivateKey::from_pem(std::string(data, static_cast<std::size_t>(len)));
  REQUIRE(key.ok());
  return std::move(key.value());
}

Bytes bytes_of(const std::string& s) {
  return Bytes(s.begin(), s.end());
}

std::string serialize(const v1::Signed& s) {
  std::string out;
  REQUIRE(s.SerializeToString(&out));
  return out;
}

v1::DeviceToken sample_token() {
  v1::DeviceToken t;
  t.set_token_id(std::string(16, '\x11'));
  t.set_issued_at(1'700'000'000);
  t.set_device_id(std::string(16, '\x22'));
  t.set_authorized_uses(3);
  t.set_user_id(std::string(16, '\x33'));
  t.set_user_public_key(std::string(44, '\x44'));
  t.set_expires_at(1'700'604'800);
  t.set_authorization_id(7);
  t.add_roles("operator");
  return t;
}

Bytes token_body() {
  return bytes_of(sample_token().SerializeAsString());
}

v1::Signed signed_token(const PrivateKey& key) {
  auto s = sign_object(v1::Signed::TYPE_DEVICE_TOKEN, token_body(), key);
  REQUIRE(s.ok());
  return std::move(s.value());
}

const AlgorithmPolicy kDefaultPolicy{};

}  // namespace

// --- labels and signing input ----------------------------------------------

TEST_CASE("domain labels are the body messages' full names, NUL-terminated") {
  auto expect_label = [](ObjectType t, const google::protobuf::Descriptor* d) {
    CHECK(domain_label(t) == d->full_name() + std::string(1, '\0'));
  };
  expect_label(v1::Signed::TYPE_CLOUD_KEY_AUTHORIZATION, v1::CloudKeyAuthorization::descriptor());
  expect_label(v1::Signed::TYPE_DEVICE_TOKEN, v1::DeviceToken::descriptor());
  expect_label(v1::Signed::TYPE_COMMAND_REQUEST, v1::CommandRequest::descriptor());
  expect_label(v1::Signed::TYPE_COMMAND_RESPONSE, v1::CommandResponse::descriptor());
  CHECK(domain_label(v1::Signed::TYPE_AUDIT_EXPORT) ==
        std::string_view("tollgate.v1.AuditExport\0", 24));
  CHECK(domain_label(v1::Signed::TYPE_STATUS_RESPONSE) ==
        std::string_view("tollgate.v1.StatusReport\0", 25));
}

TEST_CASE("every object type has its own label and unknown types have none") {
  std::set<std::string_view> labels;
  for (ObjectType t : kAllTypes) {
    const std::string_view label = domain_label(t);
    CAPTURE(label);
    CHECK(label.starts_with("tollgate.v1."));
    CHECK(label.back() == '\0');
    CHECK(label.find('\0') == label.size() - 1);  // so no label is a prefix of another
    labels.insert(label);
  }
  CHECK(labels.size() == std::size(kAllTypes));
  CHECK(domain_label(v1::Signed::TYPE_UNSPECIFIED).empty());
  CHECK(domain_label(static_cast<ObjectType>(99)).empty());
}

TEST_CASE("signing input is the label followed by the body bytes") {
  const Bytes body{0x00, 0x01, 0xff};
  const Bytes input = signing_input(v1::Signed::TYPE_DEVICE_TOKEN, body);
  const std::string expected = std::string("tollgate.v1.DeviceToken") + '\0' + '\x00' + "\x01\xff";
  CHECK(input == bytes_of(expected));
}

// --- sign / parse / verify round trip ---------------------------------------

TEST_CASE("signed objects of every type round-trip through bytes for every key type") {
  const Bytes body = token_body();
  for (KeyType kt : kAllKeyTypes) {
    const PrivateKey& key = test_key(kt);
    for (ObjectType t : kAllTypes) {
      CAPTURE(crypto::key_type_name(kt));
      CAPTURE(domain_label(t));
      auto s = sign_object(t, body, key);
      REQUIRE(s.ok());
      CHECK(s->type() == t);
      CHECK(bytes_of(s->body()) == body);
      CHECK(s->algorithm() == key.algorithm());
      CHECK(bytes_of(s->signer_key_id()) ==
            Bytes(key.public_key().id().begin(), key.public_key().id().end()));
      // The signature is a plain signature over signing_input: anyone can check
      // it with the exported input and the public key.
      CHECK(key.public_key().verify(signing_input(t, body), bytes_of(s->signature())).ok());

      auto parsed = parse_signed(bytes_of(serialize(*s)));
      REQUIRE(parsed.ok());
      CHECK(verify_signed(*parsed, t, key.public_key(), kDefaultPolicy).ok());
    }
  }
}

TEST_CASE("verify_and_parse returns the body message after a valid signature") {
  const PrivateKey& key = test_key(KeyType::kEd25519);
  auto token = verify_and_parse<v1::DeviceToken>(signed_token(key), v1::Signed::TYPE_DEVICE_TOKEN,
                                                 key.public_key(), kDefaultPolicy);
  REQUIRE(token.ok());
  CHECK(token->authorized_uses() == 3);
  CHECK(token->authorization_id() == 7);
}

TEST_CASE("a validly signed body that does not parse is malformed") {
  const PrivateKey& key = test_key(KeyType::kEd25519);
  auto s = sign_object(v1::Signed::TYPE_DEVICE_TOKEN, Bytes{0xff, 0xff, 0xff}, key);
  REQUIRE(s.ok());
  CHECK(verify_and_parse<v1::DeviceToken>(*s, v1::Signed::TYPE_DEVICE_TOKEN, key.public_key(),
                                          kDefaultPolicy)
            .error() == v1::ERROR_MALFORMED);
}

TEST_CASE("verification covers the received body bytes, not a re-serialization") {
  // Protobuf reads concatenated encodings as one message, so fields written in
  // reverse order are another byte string for the same token. A signature over
  // one encoding never covers the other.
  const PrivateKey& key = test_key(KeyType::kEd25519);
  v1::DeviceToken tail;
  tail.set_authorization_id(7);
  v1::DeviceToken head;
  head.set_token_id(std::string(16, '\x11'));
  const std::string reversed = tail.SerializeAsString() + head.SerializeAsString();
  v1::DeviceToken token;
  REQUIRE(token.ParseFromString(reversed));
  REQUIRE(token.authorization_id() == 7);
  REQUIRE(token.SerializeAsString() != reversed);

  auto s = sign_object(v1::Signed::TYPE_DEVICE_TOKEN, bytes_of(reversed), key);
  REQUIRE(s.ok());
  CHECK(verify_signed(*s, v1::Signed::TYPE_DEVICE_TOKEN, key.public_key(), kDefaultPolicy).ok());
  v1::Signed canonical = *s;
  canonical.set_body(token.SerializeAsString());
  CHECK(verify_signed(canonical, v1::Signed::TYPE_DEVICE_TOKEN, key.public_key(), kDefaultPolicy)
            .error() == v1::ERROR_BAD_SIGNATURE);
}

// --- A5: tampering ---------------------------------------------------------

TEST_CASE("every single-bit flip of the body is rejected as a bad signature") {
  for (KeyType kt : {KeyType::kEd25519, KeyType::kP256, KeyType::kRsa2048}) {
    CAPTURE(crypto::key_type_name(kt));
    const PrivateKey& key = test_key(kt);
    const v1::Signed good = signed_token(key);
    int wrong = 0;
    for (std::size_t i = 0; i < good.body().size(); ++i) {
      for (int bit = 0; bit < 8; ++bit) {
        v1::Signed bad = good;
        (*bad.mutable_body())[i] = static_cast<char>(bad.body()[i] ^ (1 << bit));
        if (verify_signed(bad, v1::Signed::TYPE_DEVICE_TOKEN, key.public_key(), kDefaultPolicy)
                .error() != v1::ERROR_BAD_SIGNATURE) {
          ++wrong;
        }
      }
    }
    CHECK(wrong == 0);
  }
}

TEST_CASE("every single-bit flip of the signature is rejected as a bad signature") {
  for (KeyType kt : kAllKeyTypes) {
    CAPTURE(crypto::key_type_name(kt));
    const PrivateKey& key = test_key(kt);
    const v1::Signed good = signed_token(key);
    int wrong = 0;
    for (std::size_t i = 0; i < good.signature().size(); ++i) {
      for (int bit : {0, 7}) {
        v1::Signed bad = good;
        (*bad.mutable_signature())[i] = static_cast<char>(bad.signature()[i] ^ (1 << bit));
        if (verify_signed(bad, v1::Signed::TYPE_DEVICE_TOKEN, key.public_key(), kDefaultPolicy)
                .error() != v1::ERROR_BAD_SIGNATURE) {
          ++wrong;
        }
      }
    }
    CHECK(wrong == 0);
  }
}

TEST_CASE("every single-bit flip anywhere in the serialized envelope is rejected") {
  const PrivateKey& key = test_key(KeyType::kEd25519);
  const std::string wire = serialize(signed_token(key));
  int accepted = 0;
  for (std::size_t i = 0; i < wire.size(); ++i) {
    for (int bit = 0; bit < 8; ++bit) {
      std::string bad = wire;
      bad[i] = static_cast<char>(bad[i] ^ (1 << bit));
      auto parsed = parse_signed(bytes_of(bad));
      if (parsed.ok() &&
          verify_signed(*parsed, v1::Signed::TYPE_DEVICE_TOKEN, key.public_key(), kDefaultPolicy)
              .ok()) {
        ++accepted;
      }
    }
  }
  CHECK(accepted == 0);
}

// --- A10: algorithm confusion and downgrade --------------------------------

TEST_CASE("an algorithm field that says Ed25519 over an RSA key is an algorithm mismatch") {
  const PrivateKey& rsa = test_key(KeyType::kRsa2048);
  v1::Signed s = signed_token(rsa);
  s.set_algorithm(v1::Signed::ALGORITHM_ED25519);
  CHECK(verify_signed(s, v1::Signed::TYPE_DEVICE_TOKEN, rsa.public_key(), kDefaultPolicy).error() ==
        v1::ERROR_ALGORITHM_MISMATCH);
}

TEST_CASE("an algorithm field that disagrees with the key is a mismatch for every pair") {
  const crypto::Algorithm algs[] = {v1::Signed::ALGORITHM_ED25519,
                                    v1::Signed::ALGORITHM_ECDSA_P256_SHA256,
                                    v1::Signed::ALGORITHM_RSA_PSS_SHA256};
  for (KeyType kt : {KeyType::kEd25519, KeyType::kP256, KeyType::kRsa2048}) {
    const PrivateKey& key = test_key(kt);
    for (crypto::Algorithm claimed : algs) {
      if (claimed == key.algorithm()) continue;
      CAPTURE(crypto::key_type_name(kt));
      CAPTURE(crypto::algorithm_name(claimed));
      v1::Signed s = signed_token(key);
      s.set_algorithm(claimed);
      CHECK(verify_signed(s, v1::Signed::TYPE_DEVICE_TOKEN, key.public_key(), kDefaultPolicy)
                .error() == v1::ERROR_ALGORITHM_MISMATCH);
    }
  }
}

TEST_CASE("a policy without RSA refuses an RSA signer") {
  const PrivateKey& rsa = test_key(KeyType::kRsa3072);
  AlgorithmPolicy no_rsa;
  no_rsa.allowed.erase(v1::Signed::ALGORITHM_RSA_PSS_SHA256);
  CHECK(verify_signed(signed_token(rsa), v1::Signed::TYPE_DEVICE_TOKEN, rsa.public_key(), no_rsa)
            .error() == v1::ERROR_ALGORITHM_NOT_ALLOWED);
  CHECK(no_rsa.check(test_key(KeyType::kEd25519).public_key()).ok());
}

TEST_CASE("an Ed25519-only policy refuses ECDSA") {
  AlgorithmPolicy ed_only;
  ed_only.allowed = {v1::Signed::ALGORITHM_ED25519};
  const PrivateKey& p256 = test_key(KeyType::kP256);
  CHECK(verify_signed(signed_token(p256), v1::Signed::TYPE_DEVICE_TOKEN, p256.public_key(), ed_only)
            .error() == v1::ERROR_ALGORITHM_NOT_ALLOWED);
}

TEST_CASE("an RSA-1024 signer is refused as too weak even with a valid signature") {
  const PrivateKey weak = rsa1024_key();
  const v1::Signed s = signed_token(weak);
  CHECK(weak.public_key()
            .verify(signing_input(v1::Signed::TYPE_DEVICE_TOKEN, token_body()),
                    bytes_of(s.signature()))
            .ok());
  CHECK(
      verify_signed(s, v1::Signed::TYPE_DEVICE_TOKEN, weak.public_key(), kDefaultPolicy).error() ==
      v1::ERROR_KEY_TOO_WEAK);
}

TEST_CASE("raising the minimum RSA size refuses RSA-2048 and keeps RSA-3072") {
  AlgorithmPolicy strict;
  strict.min_rsa_bits = 3072;
  CHECK(strict.check(test_key(KeyType::kRsa2048).public_key()).error() == v1::ERROR_KEY_TOO_WEAK);
  CHECK(strict.check(test_key(KeyType::kRsa3072).public_key()).ok());
}

TEST_CASE("a key with no algorithm is never allowed") {
  const PublicKey empty;
  AlgorithmPolicy permissive;
  permissive.allowed.insert(v1::Signed::ALGORITHM_UNSPECIFIED);
  CHECK(kDefaultPolicy.check(empty).error() == v1::ERROR_ALGORITHM_NOT_ALLOWED);
  CHECK(permissive.check(empty).error() == v1::ERROR_ALGORITHM_NOT_ALLOWED);
}

// --- A11: cross-type reuse -------------------------------------------------

TEST_CASE("a device token signature relabeled as a cloud key authorization fails the signature") {
  const PrivateKey& key = test_key(KeyType::kEd25519);
  v1::Signed s = signed_token(key);
  s.set_type(v1::Signed::TYPE_CLOUD_KEY_AUTHORIZATION);
  CHECK(verify_signed(s, v1::Signed::TYPE_CLOUD_KEY_AUTHORIZATION, key.public_key(), kDefaultPolicy)
            .error() == v1::ERROR_BAD_SIGNATURE);
}

TEST_CASE(
    "a device token presented where a cloud key authorization is expected is the wrong type") {
  const PrivateKey& key = test_key(KeyType::kEd25519);
  CHECK(verify_signed(signed_token(key), v1::Signed::TYPE_CLOUD_KEY_AUTHORIZATION, key.public_key(),
                      kDefaultPolicy)
            .error() == v1::ERROR_WRONG_TYPE);
}

TEST_CASE("no signature over one object type verifies as any other type") {
  const Bytes body = token_body();
  for (KeyType kt : {KeyType::kEd25519, KeyType::kP256, KeyType::kRsa2048}) {
    const PrivateKey& key = test_key(kt);
    for (ObjectType signed_as : kAllTypes) {
      const v1::Signed original = sign_object(signed_as, body, key).value();
      for (ObjectType presented_as : kAllTypes) {
        if (presented_as == signed_as) continue;
        CAPTURE(crypto::key_type_name(kt));
        CAPTURE(domain_label(signed_as));
        CAPTURE(domain_label(presented_as));
        v1::Signed relabeled = original;
        relabeled.set_type(presented_as);
        CHECK(verify_signed(relabeled, presented_as, key.public_key(), kDefaultPolicy).error() ==
              v1::ERROR_BAD_SIGNATURE);
        CHECK(verify_signed(original, presented_as, key.public_key(), kDefaultPolicy).error() ==
              v1::ERROR_WRONG_TYPE);
      }
    }
  }
}

// --- A17: unknown signers --------------------------------------------------

TEST_CASE("an object signed by a key the verifier does not hold names an unknown signer") {
  auto stranger = PrivateKey::generate(KeyType::kEd25519);
  REQUIRE(stranger.ok());
  const PrivateKey& trusted = test_key(KeyType::kEd25519);
  CHECK(verify_signed(signed_token(*stranger), v1::Signed::TYPE_DEVICE_TOKEN, trusted.public_key(),
                      kDefaultPolicy)
            .error() == v1::ERROR_UNKNOWN_SIGNER);
}

TEST_CASE("a stranger's signature that claims the trusted key id fails the signature check") {
  auto stranger = PrivateKey::generate(KeyType::kEd25519);
  REQUIRE(stranger.ok());
  const PrivateKey& trusted = test_key(KeyType::kEd25519);
  v1::Signed s = signed_token(*stranger);
  const auto& id = trusted.public_key().id();
  s.set_signer_key_id(std::string(id.begin(), id.end()));
  CHECK(verify_signed(s, v1::Signed::TYPE_DEVICE_TOKEN, trusted.public_key(), kDefaultPolicy)
            .error() == v1::ERROR_BAD_SIGNATURE);
}

// --- the documented order of checks ----------------------------------------

TEST_CASE("verification reports the first failing check in the documented order") {
  const PrivateKey& rsa = test_key(KeyType::kRsa2048);
  AlgorithmPolicy no_rsa;
  no_rsa.allowed.erase(v1::Signed::ALGORITHM_RSA_PSS_SHA256);

  // Every defect at once, removed one by one from the front of the list.
  v1::Signed s = signed_token(rsa);
  s.set_type(v1::Signed::TYPE_COMMAND_REQUEST);
  s.set_signer_key_id(std::string(16, '\0'));
  s.set_algorithm(v1::Signed::ALGORITHM_ED25519);
  (*s.mutable_signature())[0] ^= 0x01;
  const auto expected = v1::Signed::TYPE_DEVICE_TOKEN;
  CHECK(verify_signed(s, expected, rsa.public_key(), no_rsa).error() == v1::ERROR_WRONG_TYPE);
  s.set_type(expected);
  CHECK(verify_signed(s, expected, rsa.public_key(), no_rsa).error() == v1::ERROR_UNKNOWN_SIGNER);
  const auto& id = rsa.public_key().id();
  s.set_signer_key_id(std::string(id.begin(), id.end()));
  CHECK(verify_signed(s, expected, rsa.public_key(), no_rsa).error() ==
        v1::ERROR_ALGORITHM_NOT_ALLOWED);
  CHECK(verify_signed(s, expected, rsa.public_key(), kDefaultPolicy).error() ==
        v1::ERROR_ALGORITHM_MISMATCH);
  s.set_algorithm(v1::Signed::ALGORITHM_RSA_PSS_SHA256);
  CHECK(verify_signed(s, expected, rsa.public_key(), kDefaultPolicy).error() ==
        v1::ERROR_BAD_SIGNATURE);
  (*s.mutable_signature())[0] ^= 0x01;
  CHECK(verify_signed(s, expected, rsa.public_key(), kDefaultPolicy).ok());
}

TEST_CASE("expecting an unlabeled type verifies nothing") {
  const PrivateKey& key = test_key(KeyType::kEd25519);
  v1::Signed s = signed_token(key);
  s.set_type(v1::Signed::TYPE_UNSPECIFIED);
  CHECK(verify_signed(s, v1::Signed::TYPE_UNSPECIFIED, key.public_key(), kDefaultPolicy).error() ==
        v1::ERROR_WRONG_TYPE);
}

// --- sign_object refusals --------------------------------------------------

TEST_CASE("sign_object refuses unlabeled types and bodies no verifier would accept") {
  const PrivateKey& key = test_key(KeyType::kEd25519);
  CHECK(sign_object(v1::Signed::TYPE_UNSPECIFIED, Bytes{1}, key).error() == v1::ERROR_MALFORMED);
  CHECK(
      sign_object(v1::Signed::TYPE_DEVICE_TOKEN, Bytes(kMaxSignedObjectSize + 1, 0), key).error() ==
      v1::ERROR_TOO_LARGE);
  // The body fits, the envelope around it does not.
  CHECK(sign_object(v1::Signed::TYPE_DEVICE_TOKEN, Bytes(kMaxSignedObjectSize - 10, 0), key)
            .error() == v1::ERROR_TOO_LARGE);
  CHECK(sign_object(v1::Signed::TYPE_DEVICE_TOKEN, Bytes{1}, PrivateKey{}).error() ==
        v1::ERROR_INTERNAL);
}

TEST_CASE("the largest envelope sign_object produces is accepted by parse_signed") {
  const PrivateKey& key = test_key(KeyType::kRsa3072);
  Bytes body(kMaxSignedObjectSize - 512, 0x5a);
  auto s = sign_object(v1::Signed::TYPE_AUDIT_EXPORT, body, key);
  REQUIRE(s.ok());
  const std::string wire = serialize(*s);
  CHECK(wire.size() <= kMaxSignedObjectSize);
  auto parsed = parse_signed(bytes_of(wire));
  REQUIRE(parsed.ok());
  CHECK(
      verify_signed(*parsed, v1::Signed::TYPE_AUDIT_EXPORT, key.public_key(), kDefaultPolicy).ok());
}

// --- parse_signed caps and required fields ---------------------------------

namespace {
v1::Signed valid_envelope() {
  return signed_token(test_key(KeyType::kEd25519));
}
Result<v1::Signed> reparse(const v1::Signed& s) {
  return parse_signed(bytes_of(serialize(s)));
}
}  // namespace

TEST_CASE("parse_signed refuses oversized input before parsing it") {
  CHECK(parse_signed(Bytes(kMaxSignedObjectSize + 1, 0)).error() == v1::ERROR_TOO_LARGE);
  // A well-formed envelope just over the cap is refused the same way.
  v1::Signed big = valid_envelope();
  big.set_body(std::string(kMaxSignedObjectSize, 'x'));
  CHECK(reparse(big).error() == v1::ERROR_TOO_LARGE);
}

TEST_CASE("parse_signed refuses garbage and empty input as malformed") {
  CHECK(parse_signed({}).error() == v1::ERROR_MALFORMED);
  CHECK(parse_signed(Bytes(kMaxSignedObjectSize, 0xff)).error() == v1::ERROR_MALFORMED);
  CHECK(parse_signed(bytes_of("definitely not protobuf")).error() == v1::ERROR_MALFORMED);
  const std::string wire = serialize(valid_envelope());
  CHECK(parse_signed(bytes_of(wire.substr(0, wire.size() - 1))).error() == v1::ERROR_MALFORMED);
}

TEST_CASE("parse_signed accepts a valid envelope unchanged") {
  const v1::Signed s = valid_envelope();
  auto parsed = reparse(s);
  REQUIRE(parsed.ok());
  CHECK(serialize(*parsed) == serialize(s));
}

TEST_CASE("parse_signed requires a 16-byte signer key id") {
  for (std::size_t size : {0, 15, 17, 32}) {
    CAPTURE(size);
    v1::Signed s = valid_envelope();
    s.set_signer_key_id(std::string(size, '\x01'));
    CHECK(reparse(s).error() == v1::ERROR_MALFORMED);
  }
}

TEST_CASE("parse_signed requires a known algorithm and type") {
  v1::Signed s = valid_envelope();
  s.set_algorithm(v1::Signed::ALGORITHM_UNSPECIFIED);
  CHECK(reparse(s).error() == v1::ERROR_MALFORMED);
  s.set_algorithm(static_cast<crypto::Algorithm>(42));
  CHECK(reparse(s).error() == v1::ERROR_MALFORMED);

  s = valid_envelope();
  s.set_type(v1::Signed::TYPE_UNSPECIFIED);
  CHECK(reparse(s).error() == v1::ERROR_MALFORMED);
  s.set_type(static_cast<ObjectType>(42));
  CHECK(reparse(s).error() == v1::ERROR_MALFORMED);
}

TEST_CASE("parse_signed requires a signature of 1 to 512 bytes") {
  v1::Signed s = valid_envelope();
  s.clear_signature();
  CHECK(reparse(s).error() == v1::ERROR_MALFORMED);
  s.set_signature(std::string(crypto::kMaxSignatureSize + 1, 'x'));
  CHECK(reparse(s).error() == v1::ERROR_MALFORMED);
  s.set_signature(std::string(crypto::kMaxSignatureSize, 'x'));
  CHECK(reparse(s).ok());
}

TEST_CASE("parse_signed refuses envelope fields this version does not know") {
  std::string wire = serialize(valid_envelope());
  wire += "\x30\x01";  // field 6, varint 1
  CHECK(parse_signed(bytes_of(wire)).error() == v1::ERROR_MALFORMED);
}
