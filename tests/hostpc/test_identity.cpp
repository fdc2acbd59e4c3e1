// User identities at rest (THREATS A18): the private key file is encrypted
// under the passphrase, and only the right passphrase opens it.
#include <openssl/evp.h>
#include <sys/stat.h>

#include <fstream>
#include <sstream>

#include "hostpc/identity.hpp"
#include "tests/hostpc/host_testkit.hpp"

using namespace tollgate;
using namespace tollgate::host;
using namespace tollgate::hosttest;

namespace {

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

unsigned mode_of(const std::string& path) {
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  return st.st_mode & 0777;
}

// The DER inside the first PEM block.
Bytes pem_der(const std::string& pem) {
  const auto begin = pem.find('\n') + 1;
  const auto end = pem.find("-----END");
  std::string b64;
  for (char c : pem.substr(begin, end - begin)) {
    if (c != '\n' && c != '\r') b64.push_back(c);
  }
  Bytes out(b64.size());
  const int n = EVP_DecodeBlock(out.data(), reinterpret_cast<const unsigned char*>(b64.data()),
                                static_cast<int>(b64.size()));
  REQUIRE(n > 0);
  out.resize(static_cast<std::size_t>(n));
  return out;
}

bool contains(const Bytes& hay, const Bytes& needle) {
  return std::search(hay.begin(), hay.end(), needle.begin(), needle.end()) != hay.end();
}

}  // namespace

TEST_CASE("home and identities folders are created private (0700)") {
  TempDir dir;
  std::string err;
  auto store = IdentityStore::open(dir.str("home"), &err);
  REQUIRE(store.has_value());
  CHECK(mode_of(dir.str("home")) == 0700);
  CHECK(mode_of(dir.str("home/identities")) == 0700);
}

TEST_CASE("the private key file holds no raw key and only the passphrase opens it") {
  TempDir dir;
  std::string err;
  auto store = IdentityStore::open(dir.str("home"), &err);
  REQUIRE(store.has_value());
  const Bytes user = uuid(1, 0x05);
  IdentityInfo info;
  REQUIRE_FALSE(store->create(user, crypto::KeyType::kEd25519, "correct horse", &info).has_value());
  const std::string key_file = dir.str("home/identities/" + uuid_to_string(user) + ".key");
  CHECK(mode_of(key_file) == 0600);
  const std::string text = slurp(key_file);
  CHECK(text.find("-----BEGIN ENCRYPTED PRIVATE KEY-----") == 0);

  auto key = store->load(user, "correct horse");
  REQUIRE(key.index() == 0);
  const auto& k = std::get<0>(key);
  CHECK(k.public_key().id() == info.key_id);
  // The Ed25519 seed is the last 32 bytes of the unencrypted PKCS#8 DER; it
  // must appear neither in the file's text nor in its decoded DER.
  auto plain = k.pem();
  REQUIRE(plain.ok());
  const Bytes der = pem_der(*plain);
  REQUIRE(der.size() > 32);
  const Bytes seed(der.end() - 32, der.end());
  CHECK_FALSE(contains(Bytes(text.begin(), text.end()), seed));
  CHECK_FALSE(contains(pem_der(text), seed));
  CHECK(text.find(plain->substr(28, 40)) == std::string::npos);

  auto wrong = store->load(user, "wrong horse");
  REQUIRE(wrong.index() == 1);
  CHECK(std::get<1>(wrong).code == v1::ERROR_MALFORMED);
  auto empty = store->load(user, "");
  REQUIRE(empty.index() == 1);
}

TEST_CASE("an empty passphrase and a second identity for the same user are refused") {
  TempDir dir;
  std::string err;
  auto store = IdentityStore::open(dir.str("home"), &err);
  REQUIRE(store.has_value());
  const Bytes user = uuid(2, 0x05);
  CHECK(store->create(user, crypto::KeyType::kEd25519, "", nullptr).has_value());
  CHECK(store->list().empty());
  REQUIRE_FALSE(store->create(user, crypto::KeyType::kP256, "pw", nullptr).has_value());
  CHECK(store->create(user, crypto::KeyType::kEd25519, "pw", nullptr).has_value());
  auto list = store->list();
  REQUIRE(list.size() == 1);
  CHECK(list[0].user_id == user);
  CHECK(list[0].algorithm == v1::Signed::ALGORITHM_ECDSA_P256_SHA256);
  auto found = store->find(user);
  REQUIRE(found.has_value());
  CHECK(crypto::PublicKey::from_pem(found->public_pem).ok());
}

TEST_CASE("home resolves from the flag, then TOLLGATE_HOME, then HOME") {
  ::setenv("TOLLGATE_HOME", "/env/home", 1);
  CHECK(resolve_home(std::string("/flag")) == std::optional<std::string>("/flag"));
  CHECK(resolve_home(std::nullopt) == std::optional<std::string>("/env/home"));
  ::unsetenv("TOLLGATE_HOME");
  ::setenv("HOME", "/u", 1);
  CHECK(resolve_home(std::nullopt) == std::optional<std::string>("/u/.local/share/tollgate"));
}

TEST_CASE("passphrase files give their first line and an empty one is refused") {
  TempDir dir;
  {
    std::ofstream(dir.str("p")) << "secret\r\nignored\n";
    std::ofstream(dir.str("e")) << "\n";
  }
  std::string err;
  CHECK(read_passphrase_file(dir.str("p"), &err) == std::optional<std::string>("secret"));
  CHECK_FALSE(read_passphrase_file(dir.str("e"), &err).has_value());
  CHECK_FALSE(read_passphrase_file(dir.str("missing"), &err).has_value());
}
