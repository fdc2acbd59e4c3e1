#include "hostpc/protocol.hpp"

#include "gateway/signed.hpp"

namespace tollgate::host {

Bytes request_hash(ByteView request) {
  const auto full = crypto::sha256(request);
  return Bytes(full.begin(), full.begin() + kRequestHashSize);
}

Result<v1::StatusReport> verify_status(ByteView signed_status, ByteView challenge,
                                       const crypto::PublicKey* pinned) {
  auto envelope = parse_signed(signed_status);
  if (!envelope) return envelope.error();
  const AlgorithmPolicy policy;
  v1::StatusReport report;
  if (pinned != nullptr) {
    auto r = verify_and_parse<v1::StatusReport>(*envelope, v1::Signed::TYPE_STATUS_RESPONSE,
                                                *pinned, policy);
    if (!r) return r.error();
    report = std::move(*r);
    // The signature is the pinned key's, but the report must also describe it:
    // a device that claims another key is not the device we paired with.
    if (!constant_time_equal(as_bytes(report.device_public_key()), pinned->spki_der())) {
      return v1::ERROR_UNKNOWN_SIGNER;
    }
  } else {
    // First contact: the body names the key; only after the signature checks
    // out under that key is anything else in the body believed.
    v1::StatusReport unverified;
    if (!unverified.ParseFromString(envelope->body())) return v1::ERROR_MALFORMED;
    auto key = crypto::PublicKey::from_spki_der(as_bytes(unverified.device_public_key()));
    if (!key) return key.error();
    auto r = verify_and_parse<v1::StatusReport>(*envelope, v1::Signed::TYPE_STATUS_RESPONSE, *key,
                                                policy);
    if (!r) return r.error();
    report = std::move(*r);
  }
  if (!constant_time_equal(as_bytes(report.challenge()), challenge)) return v1::ERROR_STALE_NONCE;
  if (report.device_id().size() != 16) return v1::ERROR_MALFORMED;
  return report;
}

Result<v1::CommandResponse> verify_response(ByteView signed_response, ByteView expected_hash,
                                            const crypto::PublicKey& device_key) {
  auto envelope = parse_signed(signed_response);
  if (!envelope) return envelope.error();
  auto r = verify_and_parse<v1::CommandResponse>(*envelope, v1::Signed::TYPE_COMMAND_RESPONSE,
                                                 device_key, AlgorithmPolicy{});
  if (!r) return r.error();
  if (!constant_time_equal(as_bytes(r->request_hash()), expected_hash)) {
    return v1::ERROR_BAD_SIGNATURE;
  }
  switch (r->status()) {
    case v1::CommandResponse::STATUS_OK:
      break;
    case v1::CommandResponse::STATUS_REJECTED:
    case v1::CommandResponse::STATUS_FAILED:
      if (r->error() == v1::ERROR_UNSPECIFIED) return v1::ERROR_MALFORMED;
      break;
    default:
      return v1::ERROR_MALFORMED;
  }
  return r;
}

std::optional<CommandSpec> parse_command_args(const std::vector<std::string>& words,
                                              std::string* error) {
  if (words.empty() || words[0].empty() || words[0][0] == '-') {
    *error = "no command given (e.g. run-assay --protocol elisa --sample S1)";
    return std::nullopt;
  }
  CommandSpec spec;
  spec.command = words[0];
  bool have_bare = false;
  auto put = [&](std::string name, std::string value) {
    if (name.empty()) {
      *error = "empty argument name";
      return false;
    }
    if (!spec.arguments.emplace(name, std::move(value)).second) {
      *error = "argument --" + name + " given twice";
      return false;
    }
    return true;
  };
  for (std::size_t i = 1; i < words.size(); ++i) {
    const std::string& w = words[i];
    if (w.size() > 2 && w.compare(0, 2, "--") == 0) {
      std::string name = w.substr(2);
      if (auto eq = name.find('='); eq != std::string::npos) {
        if (!put(name.substr(0, eq), name.substr(eq + 1))) return std::nullopt;
        continue;
      }
      if (i + 1 >= words.size()) {
        *error = "argument --" + name + " needs a value";
        return std::nullopt;
      }
      if (!put(std::move(name), words[++i])) return std::nullopt;
    } else {
      if (have_bare) {
        *error = "more than one bare value (\"" + w + "\"): name it with --NAME VALUE";
        return std::nullopt;
      }
      have_bare = true;
      if (!put("id", w)) return std::nullopt;
    }
  }
  return spec;
}

Result<Bytes> sign_command(const CommandSpec& spec, ByteView device_id, ByteView nonce,
                           std::uint64_t request_id, const crypto::PrivateKey& user_key) {
  v1::CommandRequest req;
  req.set_device_id(std::string(as_chars(device_id)));
  req.set_nonce(std::string(as_chars(nonce)));
  req.set_request_id(request_id);
  req.set_command(spec.command);
  for (const auto& [k, v] : spec.arguments) (*req.mutable_arguments())[k] = v;
  std::string body;
  if (!req.SerializeToString(&body)) return v1::ERROR_INTERNAL;
  auto s = sign_object(v1::Signed::TYPE_COMMAND_REQUEST, as_bytes(body), user_key);
  if (!s) return s.error();
  std::string out;
  if (!s->SerializeToString(&out)) return v1::ERROR_INTERNAL;
  return Bytes(out.begin(), out.end());
}

std::uint64_t new_request_id() {
  for (;;) {
    const Bytes r = crypto::random_bytes(4);
    const std::uint64_t v = (std::uint64_t{r[0]} << 24) | (std::uint64_t{r[1]} << 16) |
                            (std::uint64_t{r[2]} << 8) | std::uint64_t{r[3]};
    if (v != 0) return v;
  }
}

bool is_unauthorized(Error e) {
  switch (e) {
    case v1::ERROR_NO_VALID_TOKEN:
    case v1::ERROR_USES_EXHAUSTED:
    case v1::ERROR_EXPIRED:
    case v1::ERROR_REVOKED:
    case v1::ERROR_AUTHORIZATION_NOT_INSTALLED:
    case v1::ERROR_ROLE_NOT_ALLOWED:
      return true;
    default:
      return false;
  }
}

bool kills_token(Error e) {
  return e == v1::ERROR_REVOKED || e == v1::ERROR_EXPIRED || e == v1::ERROR_USES_EXHAUSTED ||
         e == v1::ERROR_WRONG_DEVICE;
}

}  // namespace tollgate::host
