// Arbitrary bytes -> parse_signed -> verify_signed, as every object type, under
// one fixed key per algorithm. Must never crash, leak or read out of bounds.
// Seeds in tests/fuzz/corpus/fuzz_signed/ carry valid signatures by these keys,
// so mutations start from envelopes that pass the early checks.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "gateway/signed.hpp"

using namespace tollgate;

namespace {
constexpr const char* kKeys[] = {
    // RFC 8032 section 7.1 TEST 1.
    "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\n"
    "-----END PUBLIC KEY-----\n",
    "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE1t9moPUDdgE2oomfQpsRX9+jE3ko\n"
    "eXqnhA1aKFMas8Cwk8PenjXLL3ypPvH0dq8RuPpsGDB0ulCcEPfgITJqfA==\n-----END PUBLIC KEY-----\n",
    "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAtfkvrNd+e+AiWitWETfQ\n"
    "z1R5P2ZLkuiMIDLZw7X5JWX9N7rpJPQJ8DhyVWTr1pNqJ2oqsgdwiUwdACBKzpmJ\n"
    "nlo9Axc5/2A5Go7wmrYhqFqR1Naqz39XPM1OImK3T0RZ9x7ggHzn74CLCpUCYC3m\n"
    "6Ti/gAYtOSlQd2WnfQL5OsP9qGI9Dc2qnruU14yEgCcOr3GRXkG1lvOII1LQLwxw\n"
    "6Lk9ja8vMpR0IIgz1/Tg9rjzrv/dYsaSt0kAGZBeTwhJPze5/S3VD16v+7/SvbeU\n"
    "mcsWL8f8y1zwh1yw2yFPbBiEwuQ62NBOUPpP6yF0t88fNPWWALie9Wh8TFXP+g2t\n6wIDAQAB\n"
    "-----END PUBLIC KEY-----\n",
};

std::vector<crypto::PublicKey> load_keys() {
  std::vector<crypto::PublicKey> keys;
  for (const char* pem : kKeys) keys.push_back(std::move(crypto::PublicKey::from_pem(pem).value()));
  return keys;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const std::vector<crypto::PublicKey> keys = load_keys();
  static const AlgorithmPolicy policy;
  auto parsed = parse_signed(ByteView(data, size));
  if (!parsed) return 0;
  for (int t = v1::Signed::Type_MIN; t <= v1::Signed::Type_MAX; ++t) {
    for (const auto& key : keys) {
      (void)verify_and_parse<v1::DeviceToken>(*parsed, static_cast<ObjectType>(t), key, policy);
    }
  }
  return 0;
}
