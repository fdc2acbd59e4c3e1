// The instrument's identity and trust store: the files of a provisioned state
// directory, written once at manufacture and read at every boot.
//
// Layout of a state directory DIR:
//   DIR/device.key        the device's private key, PKCS#8 PEM, mode 0600.
//                         Deliberately NOT encrypted: the instrument must boot
//                         unattended, with nobody to type a passphrase. Protect
//                         it with the file mode and the physical device (or a
//                         secure element in a real product).
//   DIR/device.pub        its public key, SPKI PEM (what the host pins)
//   DIR/device.json       {"format":1, "device_id":"<uuid>", "algorithm":"ed25519",
//                          "key_id":"<hex>", "firmware_version":"...",
//                          "created_at":<unix seconds>}
//                         written LAST: its presence means "provisioned"
//   DIR/masters/NAME.pub  one SPKI PEM per master public key (at least one)
//   DIR/state.db          the SqliteStore; created at the first `run`, not here
//
// Every file is written atomically: a temporary file in the same folder,
// fsync, rename, fsync of the folder. A provisioning cut short leaves no
// device.json, so it can be run again; once device.json exists it refuses.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "gateway/bytes.hpp"
#include "gateway/crypto.hpp"
#include "gateway/policy.hpp"
#include "gateway/result.hpp"

namespace tollgate::instrument {

// The firmware version a provisioned device records unless told otherwise.
inline constexpr std::string_view kDefaultFirmwareVersion = "tollgate-sim 0.1.0";

struct MasterKeyFile {
  // File stem under masters/: letters, digits, '-', '_' and '.', 1..64 chars,
  // not starting with '.'. Empty = "master-1", "master-2", ... by position.
  std::string name;
  std::string pem;  // SPKI PEM ("-----BEGIN PUBLIC KEY-----")
};

struct ProvisionOptions {
  std::vector<MasterKeyFile> masters;  // at least one, distinct keys
  std::optional<Bytes> device_id;      // 16 bytes; nullopt = a fresh random UUID (v4)
  crypto::KeyType key_type = crypto::KeyType::kEd25519;
  std::string firmware_version{kDefaultFirmwareVersion};
  UnixTime created_at = 0;  // the caller's clock (recorded, not interpreted)
};

struct DeviceIdentity {
  std::filesystem::path state_dir;
  Bytes device_id;  // 16 bytes
  crypto::PrivateKey device_key;
  std::vector<crypto::PublicKey> master_keys;  // in file-name order
  std::vector<std::string> master_names;       // same order
  crypto::KeyType key_type = crypto::KeyType::kEd25519;
  std::string firmware_version;
  UnixTime created_at = 0;

  std::filesystem::path database_path() const { return state_dir / "state.db"; }
};

// True when `dir` holds a device.json (provisioning completed).
bool is_provisioned(const std::filesystem::path& dir);

// Creates `dir` (and parents) if needed, generates the device key pair and
// writes the layout above. Returns the identity as load() would read it back.
//   ERROR_LIMIT_REACHED  already provisioned (device.json exists), or a state.db
//                        exists without it: provisioning happens once
//   ERROR_MALFORMED      no master, a master PEM that does not parse, two equal
//                        masters, a bad name, device id not 16 bytes
//   ERROR_INTERNAL       key generation or file I/O failed
// `why`, when given, receives a one-line explanation on failure.
Result<DeviceIdentity> provision(const std::filesystem::path& dir, const ProvisionOptions& options,
                                 std::string* why = nullptr);

// Reads a provisioned state directory and checks it is consistent: the key
// parses, device.pub and key_id match it, the algorithm matches device.json,
// at least one master, the key file is not readable by group or others.
//   ERROR_UNSUPPORTED_VERSION  device.json has a newer "format"
//   ERROR_MALFORMED            missing or inconsistent files (why says which)
//   ERROR_INTERNAL             I/O error
Result<DeviceIdentity> load_identity(const std::filesystem::path& dir, std::string* why = nullptr);

}  // namespace tollgate::instrument
