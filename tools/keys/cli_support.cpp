#include "tools/keys/cli_support.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

namespace tollgate::keys {

namespace {

std::string os_error(int err) {
  return std::strerror(err);
}

// Writes all of `data` to `fd`, retrying short writes; false with errno set on failure.
bool write_all(int fd, const std::uint8_t* data, std::size_t size) {
  while (size > 0) {
    const ssize_t n = ::write(fd, data, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data += n;
    size -= static_cast<std::size_t>(n);
  }
  return true;
}

// Closes on scope exit (unless close_checked() already did); keeps the error paths short.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  // Closes now so the caller sees close() errors (they can mean lost data).
  bool close_checked() {
    const int fd = fd_;
    fd_ = -1;
    return ::close(fd) == 0;
  }

 private:
  int fd_;
};

std::string folder_of(const std::string& path) {
  const auto slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

}  // namespace

Bytes read_file(const std::string& path) {
  // A signed object is at most 16 KiB and a PEM key a few KiB; refuse anything
  // absurd rather than read it into memory.
  constexpr std::size_t kMaxInput = 1024 * 1024;
  const int raw = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (raw < 0) throw Failure("cannot read " + path + ": " + os_error(errno));
  Fd fd(raw);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) throw Failure("cannot read " + path + ": " + os_error(errno));
  if (S_ISDIR(st.st_mode)) throw Failure("cannot read " + path + ": is a directory");
  // Pipes are fine too (--passphrase-file <(pass show ...)): read to EOF, capped.
  Bytes data;
  std::uint8_t buf[4096];
  for (;;) {
    const ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw Failure("cannot read " + path + ": " + os_error(errno));
    if (n == 0) break;
    if (data.size() + static_cast<std::size_t>(n) > kMaxInput) {
      throw Failure("cannot read " + path + ": larger than 1 MiB");
    }
    data.insert(data.end(), buf, buf + n);
  }
  return data;
}

std::string read_text_file(const std::string& path) {
  const Bytes data = read_file(path);
  return std::string(data.begin(), data.end());
}

void write_file(const std::string& path, ByteView data, unsigned mode) {
  std::string tmp = folder_of(path) + "/.tollgate-keys-XXXXXX";
  const int raw = ::mkstemp(tmp.data());
  if (raw < 0) throw Failure("cannot write " + path + ": " + os_error(errno));
  Fd fd(raw);
  // mkstemp creates 0600; widen to the requested mode as the user's umask allows.
  const mode_t mask = ::umask(0);
  ::umask(mask);
  const bool ok = ::fchmod(fd.get(), static_cast<mode_t>(mode) & ~mask) == 0 &&
                  write_all(fd.get(), data.data(), data.size()) && ::fsync(fd.get()) == 0 &&
                  fd.close_checked();
  if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    throw Failure("cannot write " + path + ": " + os_error(err));
  }
}

void write_secret_file(const std::string& path, std::string_view text, bool overwrite) {
  const int flags = O_WRONLY | O_CREAT | O_CLOEXEC | (overwrite ? O_TRUNC : O_EXCL);
  const int raw = ::open(path.c_str(), flags, 0600);
  if (raw < 0) {
    if (errno == EEXIST) throw Failure(path + " already exists (use --force to replace it)");
    throw Failure("cannot write " + path + ": " + os_error(errno));
  }
  Fd fd(raw);
  // An overwritten file keeps its old mode; a private key must not stay readable.
  const bool ok =
      ::fchmod(fd.get(), 0600) == 0 &&
      write_all(fd.get(), reinterpret_cast<const std::uint8_t*>(text.data()), text.size()) &&
      ::fsync(fd.get()) == 0 && fd.close_checked();
  if (!ok) throw Failure("cannot write " + path + ": " + os_error(errno));
}

std::string read_passphrase(const std::string& path) {
  std::string text = read_text_file(path);
  const auto eol = text.find_first_of("\r\n");
  if (eol != std::string::npos) text.resize(eol);
  if (text.empty()) throw Failure("passphrase file " + path + " is empty");
  return text;
}

crypto::PrivateKey load_private_key(const std::string& path, const std::string& passphrase_file) {
  const std::string pem = read_text_file(path);
  const bool encrypted = pem.find("-----BEGIN ENCRYPTED PRIVATE KEY-----") != std::string::npos;
  if (encrypted && passphrase_file.empty()) {
    throw Failure(path + " is encrypted: give its passphrase with --passphrase-file");
  }
  // Refused rather than ignored: the operator believed this key was protected.
  if (!encrypted && !passphrase_file.empty() &&
      pem.find("-----BEGIN PRIVATE KEY-----") != std::string::npos) {
    throw Failure(path + " is not encrypted, but --passphrase-file was given");
  }
  const std::string passphrase = passphrase_file.empty() ? "" : read_passphrase(passphrase_file);
  auto key = crypto::PrivateKey::from_pem(pem, passphrase);
  if (!key) {
    if (encrypted) throw Failure("cannot open " + path + ": wrong passphrase or damaged key");
    if (pem.find("-----BEGIN PUBLIC KEY-----") != std::string::npos) {
      throw Failure(path + " is a public key; this needs the private key (.key)");
    }
    throw Failure(path + " is not a supported PKCS#8 PEM private key (" +
                  describe_error(key.error()) + ")");
  }
  return std::move(key).value();
}

crypto::PublicKey load_public_key(const std::string& path) {
  const std::string pem = read_text_file(path);
  if (pem.find("PRIVATE KEY-----") != std::string::npos) {
    throw Failure(path + " is a private key; give the public key (.pub) instead");
  }
  auto key = crypto::PublicKey::from_pem(pem);
  if (!key) {
    throw Failure(path + " is not a supported SPKI PEM public key (" + describe_error(key.error()) +
                  ")");
  }
  return std::move(key).value();
}

v1::Signed load_signed(const std::string& path) {
  const Bytes data = read_file(path);
  auto parsed = parse_signed(data);
  if (!parsed) {
    throw Failure(path + " is not a Tollgate signed object: " + describe_error(parsed.error()));
  }
  return std::move(parsed).value();
}

v1::Signed load_signed_as(const std::string& path, ObjectType expected) {
  v1::Signed s = load_signed(path);
  if (s.type() != expected) {
    throw Failure(path + " is a " + object_type_name(s.type()) + ", expected a " +
                  object_type_name(expected));
  }
  return s;
}

Bytes sign_to_bytes(ObjectType type, const google::protobuf::MessageLite& body,
                    const crypto::PrivateKey& key) {
  std::string body_bytes;
  if (!body.SerializeToString(&body_bytes))
    throw Failure("cannot serialize the body", kExitInternal);
  auto signed_obj = sign_object(type, as_bytes(body_bytes), key);
  if (!signed_obj) {
    throw Failure("signing failed: " + describe_error(signed_obj.error()), kExitInternal);
  }
  std::string out;
  if (!signed_obj->SerializeToString(&out)) {
    throw Failure("cannot serialize the signed object", kExitInternal);
  }
  if (out.size() > kMaxSignedObjectSize) {
    throw Failure("the signed object would be " + std::to_string(out.size()) +
                  " bytes, above the " + std::to_string(kMaxSignedObjectSize) +
                  "-byte limit devices accept");
  }
  return Bytes(out.begin(), out.end());
}

Bytes parse_uuid_arg(const std::string& text, std::string_view what) {
  auto uuid = uuid_from_string(text);
  if (!uuid || uuid->size() != 16) {
    throw Failure(std::string(what) + ": '" + text +
                  "' is not a UUID (expected 8-4-4-4-12 hex digits)");
  }
  return *uuid;
}

std::uint64_t parse_unsigned_arg(const std::string& text, std::string_view what,
                                 std::uint64_t max) {
  std::uint64_t v = 0;
  bool ok = !text.empty() && text.size() <= 20;
  for (char c : text) {
    if (!ok) break;
    if (c < '0' || c > '9') {
      ok = false;
      break;
    }
    const auto d = static_cast<std::uint64_t>(c - '0');
    if (v > (max - d) / 10) ok = false;
    v = v * 10 + d;
  }
  if (!ok || v == 0) {
    throw Failure(std::string(what) + ": '" + text + "' is not a whole number from 1 to " +
                  std::to_string(max));
  }
  return v;
}

UnixTime parse_time_arg(const std::string& text, std::string_view what) {
  auto t = parse_iso8601(text);
  if (!t) {
    throw Failure(std::string(what) + ": '" + text +
                  "' is not an ISO 8601 time (e.g. 2026-12-01, 2026-12-01T10:00:00Z, "
                  "2026-12-01T10:00:00+02:00)");
  }
  return *t;
}

std::int64_t parse_duration_arg(const std::string& text, std::string_view what) {
  auto d = parse_duration(text);
  if (!d) {
    throw Failure(std::string(what) + ": '" + text +
                  "' is not a duration (e.g. 7d, 12h, 30m, 90s, 1d12h)");
  }
  return *d;
}

UnixTime now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

Bytes random_uuid() {
  Bytes u = crypto::random_bytes(16);
  if (u.size() != 16) throw Failure("cannot draw random bytes for a token id", kExitUsage);
  u[6] = static_cast<std::uint8_t>((u[6] & 0x0F) | 0x40);  // version 4
  u[8] = static_cast<std::uint8_t>((u[8] & 0x3F) | 0x80);  // RFC 4122 variant
  return u;
}

std::string hex(ByteView b) {
  return to_hex(b);
}

std::string key_id_hex(const crypto::KeyId& id) {
  return to_hex(ByteView(id.data(), id.size()));
}

std::string object_type_name(ObjectType type) {
  switch (type) {
    case v1::Signed::TYPE_CLOUD_KEY_AUTHORIZATION:
      return "CloudKeyAuthorization";
    case v1::Signed::TYPE_DEVICE_TOKEN:
      return "DeviceToken";
    case v1::Signed::TYPE_COMMAND_REQUEST:
      return "CommandRequest";
    case v1::Signed::TYPE_COMMAND_RESPONSE:
      return "CommandResponse";
    case v1::Signed::TYPE_AUDIT_EXPORT:
      return "AuditExport";
    case v1::Signed::TYPE_STATUS_RESPONSE:
      return "StatusReport";
    default:
      break;
  }
  return "object of unknown type " + std::to_string(static_cast<int>(type));
}

std::string describe_error(Error e) {
  return std::string(error_name(e));
}

}  // namespace tollgate::keys
