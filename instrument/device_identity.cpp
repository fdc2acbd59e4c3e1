#include "instrument/device_identity.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <boost/json.hpp>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

namespace tollgate::instrument {
namespace fs = std::filesystem;
namespace {

constexpr std::int64_t kFormat = 1;
constexpr std::size_t kUuidBytes = 16;
constexpr std::uintmax_t kMaxFileSize = 64 * 1024;  // every file here is a key or a small JSON
constexpr const char* kInfoFile = "device.json";
constexpr const char* kKeyFile = "device.key";
constexpr const char* kPubFile = "device.pub";
constexpr const char* kMastersDir = "masters";
constexpr const char* kDatabaseFile = "state.db";

template <class T>
Result<T> refuse(std::string* why, Error e, std::string text) {
  if (why) *why = std::move(text);
  return e;
}

std::string errno_text() {
  return std::strerror(errno);
}

// Writes `content` to `path` so that a crash leaves either the old file or the
// complete new one: temporary file in the same folder, fsync, rename, fsync of
// the folder (which makes the rename itself durable).
bool write_atomically(const fs::path& path, std::string_view content, mode_t mode,
                      std::string* why) {
  std::string tmp =
      (path.parent_path() / ("." + path.filename().string() + ".tmp-XXXXXX")).string();
  const int fd = mkstemp(tmp.data());
  if (fd < 0) {
    if (why) *why = "cannot create a file in " + path.parent_path().string() + ": " + errno_text();
    return false;
  }
  bool ok = fchmod(fd, mode) == 0;
  std::size_t done = 0;
  while (ok && done < content.size()) {
    const ssize_t n = ::write(fd, content.data() + done, content.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0)
      ok = false;
    else
      done += static_cast<std::size_t>(n);
  }
  ok = ok && ::fsync(fd) == 0;
  const std::string err = ok ? "" : errno_text();
  ok = (::close(fd) == 0) && ok;
  if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0) {
    if (why) *why = "cannot write " + path.string() + ": " + (err.empty() ? errno_text() : err);
    ::unlink(tmp.c_str());
    return false;
  }
  const int dir = ::open(path.parent_path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0 || ::fsync(dir) != 0) {
    if (why) *why = "cannot sync " + path.parent_path().string() + ": " + errno_text();
    if (dir >= 0) ::close(dir);
    return false;
  }
  ::close(dir);
  return true;
}

std::optional<std::string> read_small_file(const fs::path& path, std::string* why) {
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  if (ec) {
    if (why) *why = "cannot read " + path.string() + ": " + ec.message();
    return std::nullopt;
  }
  if (size > kMaxFileSize) {
    if (why) *why = path.string() + " is too large to be a key or device file";
    return std::nullopt;
  }
  std::ifstream in(path, std::ios::binary);
  std::ostringstream buf;
  buf << in.rdbuf();
  if (!in.good() && !in.eof()) {
    if (why) *why = "cannot read " + path.string();
    return std::nullopt;
  }
  return buf.str();
}

bool valid_master_name(std::string_view name) {
  if (name.empty() || name.size() > 64 || name.front() == '.') return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.';
  });
}

bool key_matches_type(const crypto::PublicKey& key, crypto::KeyType type) {
  switch (type) {
    case crypto::KeyType::kEd25519:
      return key.algorithm() == v1::Signed::ALGORITHM_ED25519;
    case crypto::KeyType::kP256:
      return key.algorithm() == v1::Signed::ALGORITHM_ECDSA_P256_SHA256;
    case crypto::KeyType::kRsa2048:
      return key.algorithm() == v1::Signed::ALGORITHM_RSA_PSS_SHA256 && key.bits() == 2048;
    case crypto::KeyType::kRsa3072:
      return key.algorithm() == v1::Signed::ALGORITHM_RSA_PSS_SHA256 && key.bits() == 3072;
  }
  return false;
}

Bytes new_uuid_v4() {
  Bytes id = crypto::random_bytes(kUuidBytes);
  id[6] = static_cast<std::uint8_t>((id[6] & 0x0f) | 0x40);  // version 4
  id[8] = static_cast<std::uint8_t>((id[8] & 0x3f) | 0x80);  // RFC 4122 variant
  return id;
}

}  // namespace

bool is_provisioned(const fs::path& dir) {
  std::error_code ec;
  return fs::exists(dir / kInfoFile, ec);
}

Result<DeviceIdentity> provision(const fs::path& dir, const ProvisionOptions& options,
                                 std::string* why) {
  using R = DeviceIdentity;
  // Everything is checked before anything is written.
  if (options.masters.empty()) return refuse<R>(why, v1::ERROR_MALFORMED, "no master key given");
  if (options.device_id && options.device_id->size() != kUuidBytes) {
    return refuse<R>(why, v1::ERROR_MALFORMED, "the device id must be a 16-byte UUID");
  }
  std::vector<std::pair<std::string, crypto::PublicKey>> masters;
  std::set<std::string> names;
  std::set<crypto::KeyId> ids;
  for (std::size_t i = 0; i < options.masters.size(); ++i) {
    const MasterKeyFile& m = options.masters[i];
    std::string name = m.name.empty() ? "master-" + std::to_string(i + 1) : m.name;
    if (!valid_master_name(name)) {
      return refuse<R>(why, v1::ERROR_MALFORMED, "bad master key name '" + name + "'");
    }
    if (!names.insert(name).second) {
      return refuse<R>(why, v1::ERROR_MALFORMED, "two master keys named '" + name + "'");
    }
    auto key = crypto::PublicKey::from_pem(m.pem);
    if (!key) {
      return refuse<R>(why, v1::ERROR_MALFORMED,
                       "master key '" + name + "' is not a supported public key PEM");
    }
    if (!ids.insert(key->id()).second) {
      return refuse<R>(why, v1::ERROR_MALFORMED, "master key '" + name + "' is given twice");
    }
    masters.emplace_back(std::move(name), std::move(key).value());
  }

  std::error_code ec;
  if (!fs::exists(dir, ec)) {
    fs::create_directories(dir, ec);
    if (ec) {
      return refuse<R>(why, v1::ERROR_INTERNAL,
                       "cannot create " + dir.string() + ": " + ec.message());
    }
    // The folder holds the private key: nobody else needs to list it.
    fs::permissions(dir, fs::perms::owner_all, ec);
  }
  if (is_provisioned(dir)) {
    return refuse<R>(why, v1::ERROR_LIMIT_REACHED,
                     dir.string() + " is already provisioned (provisioning happens once)");
  }
  if (fs::exists(dir / kDatabaseFile, ec)) {
    // Never overwrite state that some device already wrote.
    return refuse<R>(
        why, v1::ERROR_LIMIT_REACHED,
        dir.string() + " holds a state.db but no device.json; refusing to provision over it");
  }

  auto key = crypto::PrivateKey::generate(options.key_type);
  if (!key) return refuse<R>(why, v1::ERROR_INTERNAL, "cannot generate the device key");
  auto key_pem = key->pem();
  const std::string pub_pem = key->public_key().pem();
  if (!key_pem || pub_pem.empty()) {
    return refuse<R>(why, v1::ERROR_INTERNAL, "cannot encode the device key");
  }

  // An earlier provisioning cut short left masters that were never used (there
  // is no device.json); start the folder afresh so only the given ones remain.
  const fs::path masters_dir = dir / kMastersDir;
  fs::create_directories(masters_dir, ec);
  if (ec) {
    return refuse<R>(why, v1::ERROR_INTERNAL,
                     "cannot create " + masters_dir.string() + ": " + ec.message());
  }
  std::vector<fs::path> stale;
  for (const auto& entry : fs::directory_iterator(masters_dir, ec)) {
    if (entry.is_regular_file()) stale.push_back(entry.path());
  }
  for (const fs::path& p : stale) fs::remove(p, ec);

  std::string io_why;
  for (const auto& [name, pub] : masters) {
    if (!write_atomically(masters_dir / (name + ".pub"), pub.pem(), 0644, &io_why)) {
      return refuse<R>(why, v1::ERROR_INTERNAL, io_why);
    }
  }
  if (!write_atomically(dir / kKeyFile, *key_pem, 0600, &io_why) ||
      !write_atomically(dir / kPubFile, pub_pem, 0644, &io_why)) {
    return refuse<R>(why, v1::ERROR_INTERNAL, io_why);
  }

  const Bytes device_id = options.device_id ? *options.device_id : new_uuid_v4();
  boost::json::object info;
  info["format"] = kFormat;
  info["device_id"] = uuid_to_string(device_id);
  info["algorithm"] = std::string(crypto::key_type_name(options.key_type));
  info["key_id"] = to_hex(key->public_key().id());
  info["firmware_version"] = options.firmware_version;
  info["created_at"] = options.created_at;
  if (!write_atomically(dir / kInfoFile, boost::json::serialize(info) + "\n", 0644, &io_why)) {
    return refuse<R>(why, v1::ERROR_INTERNAL, io_why);
  }
  return load_identity(dir, why);
}

Result<DeviceIdentity> load_identity(const fs::path& dir, std::string* why) {
  using R = DeviceIdentity;
  const fs::path info_path = dir / kInfoFile;
  if (!is_provisioned(dir)) {
    return refuse<R>(why, v1::ERROR_MALFORMED,
                     dir.string() + " is not provisioned (no device.json); run `provision` first");
  }
  std::string io_why;
  auto info_text = read_small_file(info_path, &io_why);
  if (!info_text) return refuse<R>(why, v1::ERROR_INTERNAL, io_why);

  auto bad = [&](std::string what) {
    return refuse<R>(why, v1::ERROR_MALFORMED, info_path.string() + ": " + std::move(what));
  };
  boost::system::error_code jec;
  boost::json::value doc = boost::json::parse(*info_text, jec);
  const boost::json::object* info = jec ? nullptr : doc.if_object();
  if (!info) return bad("not a JSON object");

  auto get_int = [&](std::string_view field) -> std::optional<std::int64_t> {
    const boost::json::value* v = info->if_contains(field);
    if (!v) return std::nullopt;
    boost::system::error_code ec;
    const auto n = v->to_number<std::int64_t>(ec);
    if (ec) return std::nullopt;
    return n;
  };
  auto get_string = [&](std::string_view field) -> std::optional<std::string> {
    const boost::json::value* v = info->if_contains(field);
    if (!v || !v->is_string()) return std::nullopt;
    return std::string(v->get_string());
  };

  const auto format = get_int("format");
  if (!format) return bad("no \"format\"");
  if (*format > kFormat) {
    return refuse<R>(why, v1::ERROR_UNSUPPORTED_VERSION,
                     info_path.string() + ": format " + std::to_string(*format) +
                         " is newer than this firmware knows (" + std::to_string(kFormat) + ")");
  }
  if (*format < 1) return bad("bad \"format\"");

  DeviceIdentity id;
  id.state_dir = dir;
  const auto device_id = get_string("device_id");
  auto uuid = device_id ? uuid_from_string(*device_id) : std::nullopt;
  if (!uuid) return bad("no valid \"device_id\" UUID");
  id.device_id = std::move(*uuid);
  const auto alg = get_string("algorithm");
  auto type = alg ? crypto::key_type_from_name(*alg) : std::nullopt;
  if (!type) return bad("no valid \"algorithm\"");
  id.key_type = *type;
  const auto key_id = get_string("key_id");
  if (!key_id) return bad("no \"key_id\"");
  id.firmware_version = get_string("firmware_version").value_or("");
  id.created_at = get_int("created_at").value_or(0);

  // The private key: refused when others may read it (as ssh does).
  const fs::path key_path = dir / kKeyFile;
  struct stat st {};
  if (::stat(key_path.c_str(), &st) != 0) {
    return refuse<R>(why, v1::ERROR_MALFORMED,
                     "cannot read " + key_path.string() + ": " + errno_text());
  }
  if ((st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return refuse<R>(
        why, v1::ERROR_MALFORMED,
        key_path.string() + " is accessible by group or others (mode " + mode + "); chmod 600 it");
  }
  auto key_text = read_small_file(key_path, &io_why);
  if (!key_text) return refuse<R>(why, v1::ERROR_INTERNAL, io_why);
  auto key = crypto::PrivateKey::from_pem(*key_text);
  if (!key) {
    return refuse<R>(why, v1::ERROR_MALFORMED,
                     key_path.string() + " is not an unencrypted PKCS#8 private key");
  }
  if (!key_matches_type(key->public_key(), id.key_type)) {
    return refuse<R>(why, v1::ERROR_MALFORMED,
                     key_path.string() + " is not a " + std::string(*alg) + " key");
  }
  if (to_hex(key->public_key().id()) != *key_id) {
    return bad("\"key_id\" does not match device.key");
  }
  const fs::path pub_path = dir / kPubFile;
  auto pub_text = read_small_file(pub_path, &io_why);
  if (!pub_text) return refuse<R>(why, v1::ERROR_MALFORMED, io_why);
  auto pub = crypto::PublicKey::from_pem(*pub_text);
  if (!pub || pub->spki_der() != key->public_key().spki_der()) {
    return refuse<R>(why, v1::ERROR_MALFORMED,
                     pub_path.string() + " is not the public half of device.key");
  }
  id.device_key = std::move(key).value();

  const fs::path masters_dir = dir / kMastersDir;
  std::vector<fs::path> files;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(masters_dir, ec)) {
    const fs::path& p = entry.path();
    if (entry.is_regular_file() && p.extension() == ".pub" && p.filename().string()[0] != '.') {
      files.push_back(p);
    }
  }
  if (ec) {
    return refuse<R>(why, v1::ERROR_MALFORMED,
                     "cannot list " + masters_dir.string() + ": " + ec.message());
  }
  std::sort(files.begin(), files.end());
  for (const fs::path& p : files) {
    auto text = read_small_file(p, &io_why);
    if (!text) return refuse<R>(why, v1::ERROR_INTERNAL, io_why);
    auto master = crypto::PublicKey::from_pem(*text);
    if (!master) {
      return refuse<R>(why, v1::ERROR_MALFORMED, p.string() + " is not a supported public key PEM");
    }
    id.master_keys.push_back(std::move(master).value());
    id.master_names.push_back(p.stem().string());
  }
  if (id.master_keys.empty()) {
    return refuse<R>(why, v1::ERROR_MALFORMED, "no master key in " + masters_dir.string());
  }
  return id;
}

}  // namespace tollgate::instrument
