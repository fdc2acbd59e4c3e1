#include "hostpc/identity.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <variant>

namespace tollgate::host {
namespace fs = std::filesystem;
namespace {

std::optional<std::string> slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool ensure_private_dir(const std::string& path, std::string* error) {
  std::error_code ec;
  fs::create_directories(path, ec);
  if (ec) {
    *error = "cannot create " + path + ": " + ec.message();
    return false;
  }
  if (::chmod(path.c_str(), 0700) != 0) {
    *error = "cannot set mode 0700 on " + path + ": " + std::strerror(errno);
    return false;
  }
  return true;
}

// Written 0600 from the first byte, through a temporary file and rename(), so
// neither a reader nor a crash ever sees a partial key.
bool write_private_file(const std::string& path, std::string_view text, unsigned mode,
                        std::string* error) {
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) {
    *error = "cannot write " + tmp + ": " + std::strerror(errno);
    return false;
  }
  std::size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      *error = "cannot write " + tmp + ": " + std::strerror(errno);
      ::close(fd);
      ::unlink(tmp.c_str());
      return false;
    }
    done += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0 || ::rename(tmp.c_str(), path.c_str()) != 0) {
    *error = "cannot write " + path + ": " + std::strerror(errno);
    ::unlink(tmp.c_str());
    return false;
  }
  return true;
}

}  // namespace

std::optional<std::string> resolve_home(const std::optional<std::string>& flag) {
  if (flag && !flag->empty()) return *flag;
  if (const char* env = std::getenv("TOLLGATE_HOME"); env && *env) return std::string(env);
  if (const char* home = std::getenv("HOME"); home && *home) {
    return std::string(home) + "/.local/share/tollgate";
  }
  return std::nullopt;
}

std::optional<IdentityStore> IdentityStore::open(const std::string& home, std::string* error) {
  if (!ensure_private_dir(home, error) || !ensure_private_dir(home + "/identities", error)) {
    return std::nullopt;
  }
  return IdentityStore(home);
}

std::string IdentityStore::key_path(ByteView user_id) const {
  return home_ + "/identities/" + uuid_to_string(user_id) + ".key";
}
std::string IdentityStore::pub_path(ByteView user_id) const {
  return home_ + "/identities/" + uuid_to_string(user_id) + ".pub";
}

std::optional<IdentityError> IdentityStore::create(ByteView user_id, crypto::KeyType type,
                                                   std::string_view passphrase, IdentityInfo* out) {
  if (user_id.size() != 16) return IdentityError{v1::ERROR_MALFORMED, "user id is not a UUID"};
  if (passphrase.empty()) {
    return IdentityError{v1::ERROR_MALFORMED,
                         "refusing an empty passphrase: the key would be stored unprotected"};
  }
  if (fs::exists(key_path(user_id))) {
    return IdentityError{v1::ERROR_MALFORMED,
                         "an identity for user " + uuid_to_string(user_id) + " already exists"};
  }
  auto key = crypto::PrivateKey::generate(type);
  if (!key) return IdentityError{key.error(), "cannot generate the key pair"};
  auto pem = key->pem(passphrase);
  if (!pem) return IdentityError{pem.error(), "cannot encrypt the private key"};
  std::string err;
  if (!write_private_file(key_path(user_id), *pem, 0600, &err) ||
      !write_private_file(pub_path(user_id), key->public_key().pem(), 0644, &err)) {
    return IdentityError{v1::ERROR_STORAGE, err};
  }
  if (out) {
    out->user_id = Bytes(user_id.begin(), user_id.end());
    out->public_pem = key->public_key().pem();
    out->key_id = key->public_key().id();
    out->algorithm = key->algorithm();
  }
  return std::nullopt;
}

std::optional<IdentityInfo> IdentityStore::find(ByteView user_id) const {
  auto pem = slurp(pub_path(user_id));
  if (!pem) return std::nullopt;
  auto pub = crypto::PublicKey::from_pem(*pem);
  if (!pub) return std::nullopt;
  return IdentityInfo{Bytes(user_id.begin(), user_id.end()), *pem, pub->id(), pub->algorithm()};
}

std::vector<IdentityInfo> IdentityStore::list() const {
  std::vector<IdentityInfo> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(home_ + "/identities", ec)) {
    if (e.path().extension() != ".key") continue;
    auto id = uuid_from_string(e.path().stem().string());
    if (!id) continue;
    if (auto info = find(*id)) out.push_back(std::move(*info));
  }
  std::sort(out.begin(), out.end(),
            [](const IdentityInfo& a, const IdentityInfo& b) { return a.user_id < b.user_id; });
  return out;
}

std::variant<crypto::PrivateKey, IdentityError> IdentityStore::load(
    ByteView user_id, std::string_view passphrase) const {
  auto pem = slurp(key_path(user_id));
  if (!pem) {
    return IdentityError{v1::ERROR_STORAGE, "no identity for user " + uuid_to_string(user_id) +
                                                " (run `tollgate-host identity create`)"};
  }
  auto key = crypto::PrivateKey::from_pem(*pem, passphrase);
  if (!key) {
    return IdentityError{key.error(), "cannot open the key of user " + uuid_to_string(user_id) +
                                          ": wrong passphrase or damaged key"};
  }
  return std::move(*key);
}

std::optional<std::string> read_passphrase_file(const std::string& path, std::string* error) {
  auto text = slurp(path);
  if (!text) {
    *error = "cannot read passphrase file " + path;
    return std::nullopt;
  }
  std::string line = text->substr(0, text->find('\n'));
  if (!line.empty() && line.back() == '\r') line.pop_back();
  if (line.empty()) {
    *error = "passphrase file " + path + " is empty";
    return std::nullopt;
  }
  return line;
}

namespace {
std::optional<std::string> ask_once(int fd, const std::string& prompt) {
  termios old{};
  if (::tcgetattr(fd, &old) != 0) return std::nullopt;
  termios quiet = old;
  quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
  quiet.c_lflag |= ECHONL;
  if (::tcsetattr(fd, TCSAFLUSH, &quiet) != 0) return std::nullopt;
  (void)!::write(fd, prompt.data(), prompt.size());
  std::string line;
  char c;
  while (::read(fd, &c, 1) == 1 && c != '\n') line.push_back(c);
  ::tcsetattr(fd, TCSAFLUSH, &old);
  return line;
}
}  // namespace

std::optional<std::string> prompt_passphrase(const std::string& prompt, bool confirm,
                                             std::string* error) {
  const int fd = ::open("/dev/tty", O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    *error = "no terminal to ask for the passphrase: give --passphrase-file";
    return std::nullopt;
  }
  auto first = ask_once(fd, prompt);
  std::optional<std::string> result;
  if (!first) {
    *error = "cannot turn terminal echo off: give --passphrase-file";
  } else if (first->empty()) {
    *error = "empty passphrase refused";
  } else if (confirm) {
    auto second = ask_once(fd, "again: ");
    if (!second || *second != *first) {
      *error = "passphrases differ";
    } else {
      result = std::move(first);
    }
  } else {
    result = std::move(first);
  }
  ::close(fd);
  return result;
}

}  // namespace tollgate::host
