// Provisioning files of a state directory: written once, atomically, with the
// private key readable by its owner only, and read back consistently at boot.
#include <doctest/doctest.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "instrument/device_identity.hpp"
#include "tests/gateway/testkit.hpp"

using namespace tollgate;
using namespace tollgate::testkit;
using namespace tollgate::instrument;
namespace fs = std::filesystem;

namespace {

struct TempDir {
  fs::path path;
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "tollgate-identity-XXXXXX").string();
    REQUIRE(mkdtemp(tmpl.data()) != nullptr);
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

unsigned mode_of(const fs::path& p) {
  struct stat st {};
  REQUIRE(::stat(p.c_str(), &st) == 0);
  return st.st_mode & 07777;
}

std::string read(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

void write(const fs::path& p, const std::string& text) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << text;
  REQUIRE(out.good());
}

ProvisionOptions options_with(const crypto::PrivateKey& master, std::string name = "vendor") {
  ProvisionOptions o;
  o.masters.push_back({std::move(name), master.public_key().pem()});
  o.created_at = kT0;
  return o;
}

DeviceIdentity provision_ok(const fs::path& dir, const ProvisionOptions& o) {
  std::string why;
  auto id = provision(dir, o, &why);
  INFO(why);
  REQUIRE(id.ok());
  return std::move(*id);
}

}  // namespace

TEST_CASE("provisioning writes the layout and boot reads the same identity back") {
  TempDir tmp;
  const fs::path dir = tmp.path / "state";
  const auto m1 = make_key();
  const auto m2 = make_key(crypto::KeyType::kP256);
  ProvisionOptions o = options_with(m1, "vendor");
  o.masters.push_back({"", m2.public_key().pem()});  // named by position
  o.device_id = uuid(0xD1);
  o.firmware_version = "sim 9.9";

  CHECK_FALSE(is_provisioned(dir));
  const DeviceIdentity made = provision_ok(dir, o);
  CHECK(is_provisioned(dir));
  CHECK(fs::is_regular_file(dir / "device.key"));
  CHECK(fs::is_regular_file(dir / "device.pub"));
  CHECK(fs::is_regular_file(dir / "device.json"));
  CHECK(fs::is_regular_file(dir / "masters" / "vendor.pub"));
  CHECK(fs::is_regular_file(dir / "masters" / "master-2.pub"));
  CHECK_FALSE(fs::exists(dir / "state.db"));  // created by the first run
  // No temporary files are left behind.
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    CHECK(e.path().filename().string().find(".tmp-") == std::string::npos);
  }

  std::string why;
  auto loaded = load_identity(dir, &why);
  INFO(why);
  REQUIRE(loaded.ok());
  CHECK(loaded->device_id == uuid(0xD1));
  CHECK(loaded->device_key.public_key().spki_der() == made.device_key.public_key().spki_der());
  CHECK(loaded->key_type == crypto::KeyType::kEd25519);
  CHECK(loaded->firmware_version == "sim 9.9");
  CHECK(loaded->created_at == kT0);
  REQUIRE(loaded->master_keys.size() == 2);
  CHECK(loaded->master_names == std::vector<std::string>{"master-2", "vendor"});
  CHECK(loaded->master_keys[0].id() == m2.public_key().id());
  CHECK(loaded->master_keys[1].id() == m1.public_key().id());
  CHECK(loaded->database_path() == dir / "state.db");
  CHECK(crypto::PublicKey::from_pem(read(dir / "device.pub"))->id() ==
        loaded->device_key.public_key().id());

  // The loaded key signs, and the pinned public key verifies it.
  auto sig = loaded->device_key.sign(as_bytes("hello"));
  REQUIRE(sig.ok());
  CHECK(made.device_key.public_key().verify(as_bytes("hello"), *sig).ok());
}

TEST_CASE("the device key file is readable by its owner only") {
  TempDir tmp;
  const auto master = make_key();
  provision_ok(tmp.path, options_with(master));
  CHECK(mode_of(tmp.path / "device.key") == 0600);
  CHECK((mode_of(tmp.path / "device.pub") & 0022) == 0);
  // The key is stored unencrypted on purpose (unattended boot): plain PKCS#8.
  CHECK(read(tmp.path / "device.key").rfind("-----BEGIN PRIVATE KEY-----", 0) == 0);

  fs::permissions(tmp.path / "device.key", fs::perms::group_read, fs::perm_options::add);
  std::string why;
  CHECK(load_identity(tmp.path, &why).error() == v1::ERROR_MALFORMED);
  CHECK(why.find("chmod 600") != std::string::npos);
}

TEST_CASE("a newly created state folder is private to its owner") {
  TempDir tmp;
  const auto master = make_key();
  provision_ok(tmp.path / "fresh", options_with(master));
  CHECK(mode_of(tmp.path / "fresh") == 0700);
}

TEST_CASE("provisioning happens once") {
  TempDir tmp;
  const auto master = make_key();
  const DeviceIdentity first = provision_ok(tmp.path, options_with(master));
  const std::string key_before = read(tmp.path / "device.key");

  std::string why;
  CHECK(provision(tmp.path, options_with(master), &why).error() == v1::ERROR_LIMIT_REACHED);
  CHECK(why.find("already provisioned") != std::string::npos);
  CHECK(read(tmp.path / "device.key") == key_before);
  CHECK(load_identity(tmp.path)->device_id == first.device_id);
}

TEST_CASE("a state database without provisioning files is never provisioned over") {
  TempDir tmp;
  write(tmp.path / "state.db", "precious");
  const auto master = make_key();
  CHECK(provision(tmp.path, options_with(master)).error() == v1::ERROR_LIMIT_REACHED);
  CHECK(read(tmp.path / "state.db") == "precious");
  CHECK_FALSE(fs::exists(tmp.path / "device.key"));
}

TEST_CASE("a provisioning cut short can be run again and leaves only the new masters") {
  TempDir tmp;
  const auto old_master = make_key();
  const auto new_master = make_key();
  provision_ok(tmp.path, options_with(old_master, "old"));
  fs::remove(tmp.path / "device.json");  // as if the power failed before the last file
  CHECK_FALSE(is_provisioned(tmp.path));

  const DeviceIdentity id = provision_ok(tmp.path, options_with(new_master, "new"));
  REQUIRE(id.master_keys.size() == 1);
  CHECK(id.master_names.front() == "new");
  CHECK(id.master_keys.front().id() == new_master.public_key().id());
  CHECK_FALSE(fs::exists(tmp.path / "masters" / "old.pub"));
}

TEST_CASE("bad provisioning input is refused before anything is written") {
  TempDir tmp;
  const auto master = make_key();
  ProvisionOptions o = options_with(master);
  SUBCASE("no master") {
    o.masters.clear();
  }
  SUBCASE("a master that is not a public key") {
    o.masters.push_back({"junk", "hello"});
  }
  SUBCASE("the same master twice") {
    o.masters.push_back({"again", master.public_key().pem()});
  }
  SUBCASE("two masters with one name") {
    const auto other = make_key();
    o.masters.push_back({"vendor", other.public_key().pem()});
  }
  SUBCASE("a master name that escapes the folder") {
    o.masters.front().name = "../evil";
  }
  SUBCASE("a hidden master name") {
    o.masters.front().name = ".hidden";
  }
  SUBCASE("a device id of the wrong size") {
    o.device_id = Bytes(15, 1);
  }
  std::string why;
  CHECK(provision(tmp.path / "state", o, &why).error() == v1::ERROR_MALFORMED);
  CHECK_FALSE(why.empty());
  CHECK_FALSE(fs::exists(tmp.path / "state"));
}

TEST_CASE("a new device id is a random version 4 UUID") {
  TempDir tmp;
  const auto master = make_key();
  const DeviceIdentity a = provision_ok(tmp.path / "a", options_with(master));
  const DeviceIdentity b = provision_ok(tmp.path / "b", options_with(master));
  REQUIRE(a.device_id.size() == 16);
  CHECK(a.device_id != b.device_id);
  CHECK((a.device_id[6] & 0xF0) == 0x40);
  CHECK((a.device_id[8] & 0xC0) == 0x80);
  CHECK(read(tmp.path / "a" / "device.json").find(uuid_to_string(a.device_id)) !=
        std::string::npos);
}

TEST_CASE("every device key algorithm provisions and loads") {
  const auto master = make_key();
  for (auto type : {crypto::KeyType::kEd25519, crypto::KeyType::kP256, crypto::KeyType::kRsa2048}) {
    CAPTURE(crypto::key_type_name(type));
    TempDir tmp;
    ProvisionOptions o = options_with(master);
    o.key_type = type;
    provision_ok(tmp.path, o);
    auto loaded = load_identity(tmp.path);
    REQUIRE(loaded.ok());
    CHECK(loaded->key_type == type);
    CHECK(read(tmp.path / "device.json").find(std::string(crypto::key_type_name(type))) !=
          std::string::npos);
  }
}

TEST_CASE("boot refuses inconsistent or unknown provisioning files") {
  TempDir tmp;
  const auto master = make_key();
  provision_ok(tmp.path, options_with(master));
  Error expected = v1::ERROR_MALFORMED;
  SUBCASE("device.pub of another key") {
    write(tmp.path / "device.pub", make_key().public_key().pem());
  }
  SUBCASE("device.key replaced by another key") {
    auto other = make_key();
    write(tmp.path / "device.key", *other.pem());
  }
  SUBCASE("device.json names another algorithm") {
    std::string json = read(tmp.path / "device.json");
    json.replace(json.find("ed25519"), 7, "p256");
    write(tmp.path / "device.json", json);
  }
  SUBCASE("device.json from a newer firmware") {
    std::string json = read(tmp.path / "device.json");
    json.replace(json.find("\"format\":1"), 10, "\"format\":2");
    write(tmp.path / "device.json", json);
    expected = v1::ERROR_UNSUPPORTED_VERSION;
  }
  SUBCASE("device.json is not JSON") {
    write(tmp.path / "device.json", "{nope");
  }
  SUBCASE("no master left") {
    fs::remove_all(tmp.path / "masters");
  }
  SUBCASE("a master file that is not a key") {
    write(tmp.path / "masters" / "x.pub", "junk");
  }
  SUBCASE("an encrypted device key") {
    auto k = make_key();
    write(tmp.path / "device.key", *k.pem("secret"));
  }
  std::string why;
  CHECK(load_identity(tmp.path, &why).error() == expected);
  CHECK_FALSE(why.empty());
}

TEST_CASE("boot of a folder that was never provisioned says so") {
  TempDir tmp;
  std::string why;
  CHECK(load_identity(tmp.path / "nothing", &why).error() == v1::ERROR_MALFORMED);
  CHECK(why.find("not provisioned") != std::string::npos);
}
