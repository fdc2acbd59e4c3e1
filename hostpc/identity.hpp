// The host's home folder and the user identities kept in it.
//
// Layout under the home folder (created 0700):
//   cache.db                 the token cache (hostpc/cache.hpp)
//   identities/UUID.key      the user's private key: PKCS#8 PEM encrypted with the
//                            user's passphrase (scrypt + AES-256-CBC), mode 0600
//   identities/UUID.pub      its public key, SPKI PEM
// The private key never touches disk unencrypted, so a stolen home folder
// without the passphrase cannot sign commands (THREATS A18).
#pragma once

#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "gateway/bytes.hpp"
#include "gateway/crypto.hpp"
#include "gateway/result.hpp"

namespace tollgate::host {

// --home if given, else $TOLLGATE_HOME, else ~/.local/share/tollgate.
// nullopt when none can be determined (no $HOME either).
std::optional<std::string> resolve_home(const std::optional<std::string>& flag);

struct IdentityInfo {
  Bytes user_id;  // 16 bytes
  std::string public_pem;
  crypto::KeyId key_id{};
  crypto::Algorithm algorithm = v1::Signed::ALGORITHM_UNSPECIFIED;
};

// File-level failures carry a one-line message; errors from the key layer keep
// their code (ERROR_MALFORMED for a wrong passphrase).
struct IdentityError {
  Error code = v1::ERROR_INTERNAL;
  std::string message;
};

class IdentityStore {
 public:
  // Creates `home` and its identities/ folder (0700) if missing; an existing
  // home that others can read or write is tightened to 0700.
  static std::optional<IdentityStore> open(const std::string& home, std::string* error);

  const std::string& home() const { return home_; }
  std::string cache_path() const { return home_ + "/cache.db"; }

  // Generates a key pair for `user_id`, writes it encrypted under `passphrase`.
  // Refuses an empty passphrase and an existing identity for the same user.
  std::optional<IdentityError> create(ByteView user_id, crypto::KeyType type,
                                      std::string_view passphrase, IdentityInfo* out);
  // All identities, by user id.
  std::vector<IdentityInfo> list() const;
  std::optional<IdentityInfo> find(ByteView user_id) const;
  // Decrypts the private key. A wrong passphrase is ERROR_MALFORMED, as the key
  // layer reports it; nothing is written.
  std::variant<crypto::PrivateKey, IdentityError> load(ByteView user_id,
                                                       std::string_view passphrase) const;

 private:
  explicit IdentityStore(std::string home) : home_(std::move(home)) {}
  std::string key_path(ByteView user_id) const;
  std::string pub_path(ByteView user_id) const;

  std::string home_;
};

// First line of `path` without its line ending; nullopt (with *error) if it
// cannot be read or is empty.
std::optional<std::string> read_passphrase_file(const std::string& path, std::string* error);
// Asks on the terminal with echo off (termios); nullopt when there is no
// terminal or the answer is empty. `confirm`: ask twice and require a match.
std::optional<std::string> prompt_passphrase(const std::string& prompt, bool confirm,
                                             std::string* error);

}  // namespace tollgate::host
