// Shared plumbing for the tollgate-keys subcommands: files, keys, signed
// objects and command-line values, each failing with one clear sentence.
//
// Everything here throws `Failure`; main() is the only place that catches it and
// turns it into one line on stderr and a non-zero exit status.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

#include "gateway/bytes.hpp"
#include "gateway/crypto.hpp"
#include "gateway/signed.hpp"
#include "tools/keys/iso_time.hpp"

namespace google::protobuf {
class MessageLite;
}

namespace tollgate::keys {

// Exit statuses, documented in the top-level --help.
constexpr int kExitOk = 0;
constexpr int kExitRejected = 1;  // verify: the token is not valid
constexpr int kExitUsage = 2;     // bad arguments or unreadable input; nothing was produced
constexpr int kExitInternal = 3;  // a bug or resource failure (out of memory, OpenSSL refused)

// A one-line, user-facing error. `exit_code` is what main() returns.
class Failure : public std::runtime_error {
 public:
  explicit Failure(const std::string& message, int exit_code = kExitUsage)
      : std::runtime_error(message), exit_code_(exit_code) {}
  int exit_code() const { return exit_code_; }

 private:
  int exit_code_;
};

// Whole file as bytes / text; Failure names the path and the OS reason.
Bytes read_file(const std::string& path);
std::string read_text_file(const std::string& path);

// Writes `data` to `path`, replacing it. Goes through a temporary file in the
// same folder and rename(), so a crash never leaves half an object behind.
void write_file(const std::string& path, ByteView data, unsigned mode = 0644);

// For private keys: created 0600 from the first byte (never readable by others
// even briefly). Refuses an existing path unless `overwrite`.
void write_secret_file(const std::string& path, std::string_view text, bool overwrite);

// First line of the file, without its line ending. Empty passphrases are refused:
// they would silently produce an unencrypted-strength key.
std::string read_passphrase(const std::string& path);

// Loads a PKCS#8 PEM private key; `passphrase_file` may be empty (unencrypted key).
crypto::PrivateKey load_private_key(const std::string& path, const std::string& passphrase_file);
crypto::PublicKey load_public_key(const std::string& path);

// A serialized v1::Signed read from `path` (bounds and field checks of parse_signed).
v1::Signed load_signed(const std::string& path);
// As load_signed, and the object must be of `expected` type.
v1::Signed load_signed_as(const std::string& path, ObjectType expected);

// Serializes `body`, signs it as `type` and returns the envelope's bytes, as
// written to disk and sent to devices.
Bytes sign_to_bytes(ObjectType type, const google::protobuf::MessageLite& body,
                    const crypto::PrivateKey& key);

// Command-line values; `what` names the option in the error ("--device").
Bytes parse_uuid_arg(const std::string& text, std::string_view what);
std::uint64_t parse_unsigned_arg(const std::string& text, std::string_view what,
                                 std::uint64_t max);  // 1..max, decimal digits only
UnixTime parse_time_arg(const std::string& text, std::string_view what);
std::int64_t parse_duration_arg(const std::string& text, std::string_view what);
UnixTime now();

// A fresh random (version 4) UUID.
Bytes random_uuid();

// Display helpers.
std::string hex(ByteView b);
std::string key_id_hex(const crypto::KeyId& id);
std::string object_type_name(ObjectType type);  // "DeviceToken", ...
std::string describe_error(Error e);            // error_name(e) as a std::string

}  // namespace tollgate::keys
