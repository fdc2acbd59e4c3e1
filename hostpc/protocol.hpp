// The host's side of the instrument protocol, without I/O: building requests,
// checking every device answer, parsing command-line command arguments.
// (docs/PROTOCOL.md; /work/notes/issue4-protocol.md is the contract.)
//
// The host trusts nothing it receives until it verifies: a StatusReport is
// checked under the pinned device key (or, at first contact, under the key it
// carries, which the caller then pins); every CommandResponse is checked under
// the pinned key and must name the hash of the exact request bytes we sent.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "gateway/bytes.hpp"
#include "gateway/crypto.hpp"
#include "gateway/result.hpp"

namespace tollgate::host {

constexpr std::size_t kRequestHashSize = 16;
constexpr std::size_t kChallengeSize = 16;
constexpr std::size_t kMaxTokensPerOffer = 8;

// Exit statuses of tollgate-host (the contract's numbering).
constexpr int kExitOk = 0;
constexpr int kExitUsage = 1;  // usage or other local error
constexpr int kExitDenied =
    2;  // the device refused (not for lack of a token) or the command FAILED
constexpr int kExitNoToken = 3;  // no usable cached token left
constexpr int kExitLink = 4;     // link failure: deadlines, transport errors
constexpr int kExitForged = 5;   // forged or unverifiable response, pin mismatch

// First 16 bytes of SHA-256 over `request` (the bytes exactly as sent).
Bytes request_hash(ByteView request);

// Checks a DeviceMessage.status payload. With `pinned` the signature must
// verify under it (ERROR_UNKNOWN_SIGNER when the report names another key);
// without, under the key the report carries (first contact). Then the
// challenge echo must match (ERROR_STALE_NONCE otherwise) and the device id
// must be a UUID (ERROR_MALFORMED).
Result<v1::StatusReport> verify_status(ByteView signed_status, ByteView challenge,
                                       const crypto::PublicKey* pinned);

// Checks a DeviceMessage.response payload: signature under the pinned device
// key (any failure is that failure's code), request_hash equal to
// `expected_hash` (ERROR_BAD_SIGNATURE otherwise: the response is not ours),
// status not UNSPECIFIED and a REJECTED/FAILED status naming an error
// (ERROR_MALFORMED otherwise).
Result<v1::CommandResponse> verify_response(ByteView signed_response, ByteView expected_hash,
                                            const crypto::PublicKey& device_key);

// A command as the CLI names it: `run-assay --protocol elisa --sample S1`,
// `get-result 12` (one bare value becomes argument "id"), `--name=value` too.
struct CommandSpec {
  std::string command;
  std::map<std::string, std::string> arguments;
};
// nullopt with *error for: no command, an option without a value, a repeated
// argument, more than one bare value.
std::optional<CommandSpec> parse_command_args(const std::vector<std::string>& words,
                                              std::string* error);

// Serialized, signed CommandRequest bytes (what HostMessage.command carries).
Result<Bytes> sign_command(const CommandSpec& spec, ByteView device_id, ByteView nonce,
                           std::uint64_t request_id, const crypto::PrivateKey& user_key);

// A random 32-bit request id (keeps the varint short), never 0.
std::uint64_t new_request_id();

// Errors after which offering another cached token may help.
bool is_unauthorized(Error e);
// Offer outcomes after which a token is dead for good on that device.
bool kills_token(Error e);

}  // namespace tollgate::host
