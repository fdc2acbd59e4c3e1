// The instrument client: the protocol flows of the host as Asio coroutines over
// any MessageLink (CAN, serial, or an in-memory pair in tests).
//
// Every receive has a deadline (ClientOptions::timeout). A lost answer is
// retried with the SAME bytes (same request id and nonce) up to max_resends
// times, so the device replays its stored response instead of executing twice
// (THREATS A13). Every answer is verified (hostpc/protocol.hpp) before anything
// in it is believed or written to the cache; a forged one ends the flow with
// Outcome::kForged.
//
// Time is read through the `now` function given at construction (Unix seconds)
// so tests drive it by hand.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <variant>
#include <vector>

#include "gateway/crypto.hpp"
#include "hostpc/cache.hpp"
#include "hostpc/protocol.hpp"
#include "transport/links/message_link.hpp"

namespace tollgate::host {

// Late duplicate answers skipped per exchange, and earlier requests remembered.
constexpr std::size_t kMaxStaleAnswers = 8;

struct ClientOptions {
  std::chrono::steady_clock::duration timeout = std::chrono::seconds(2);
  int max_resends = 3;              // same bytes again after a lost answer
  int max_rounds = 32;              // commands + offers + installs in one run
  UnixSeconds nonce_max_age = 100;  // a cached next_nonce older than this is not tried
};

enum class Outcome { kOk, kDenied, kNoToken, kLink, kForged, kLocal };
int exit_code(Outcome o);

struct Failure {
  Outcome outcome = Outcome::kLocal;
  Error error = v1::ERROR_UNSPECIFIED;  // the device's (or verifier's) reason, when there is one
  std::string message;
};

template <class T>
using Step = std::variant<T, Failure>;  // index 0: value, index 1: failure

struct StatusReply {
  v1::StatusReport report;
  bool pinned = false;  // verified under a key this host had already pinned
};

struct AuditExportReply {
  Bytes signed_export;      // the Signed AuditExport exactly as the device sent it
  v1::AuditExport content;  // what it says, believed only after the checks of audit_export()
};

struct RunReport {
  Outcome outcome = Outcome::kOk;
  Error error = v1::ERROR_UNSPECIFIED;
  std::string message;                 // for failures
  v1::CommandResponse response;        // the last verified response (when there is one)
  std::optional<Bytes> charged_token;  // the cached token the uses_left is booked on
  std::vector<std::string> notes;      // what happened on the way, one line each
};

class HostClient {
 public:
  HostClient(transport::MessageLink& link, TokenCache& cache, ClientOptions options,
             std::function<UnixSeconds()> now);

  // get_status with a fresh random challenge, verified under the key the cache
  // pinned for the reporting device, or self-verified when it has none.
  // A report from a pinned device under another key is kForged.
  boost::asio::awaitable<Step<StatusReply>> status();

  // status(), then pins the device key on first contact and records the link
  // and the fresh nonce.
  boost::asio::awaitable<Step<StatusReply>> pair(const std::string& endpoint);

  // The whole `run` flow for a paired device (contract: nonce, sign, send,
  // resend on loss, offer tokens / install authorizations on "unauthorized",
  // retry). `user_key` signs; `user_id` selects the cached tokens.
  boost::asio::awaitable<RunReport> run(ByteView device_id, ByteView user_id,
                                        const crypto::PrivateKey& user_key,
                                        const CommandSpec& spec);

  // export_audit from `from_seq` for the paired device `device_id`. The answer
  // must verify under the key pinned for that device (kForged otherwise, also
  // when the device on the link is another one), name that device, and carry
  // consecutive records from at least `from_seq` whose prev_hash links each to
  // the one before, with next_seq one past the last. The hash values
  // themselves are recomputed by whoever reconciles the export (the cloud).
  // An unpaired device is kLocal: nothing could check the signature.
  boost::asio::awaitable<Step<AuditExportReply>> audit_export(ByteView device_id,
                                                              std::uint64_t from_seq);

 private:
  // Sends, receives with a deadline, resends the same bytes on loss. Answers
  // `is_stale` recognises (late duplicates of earlier answers) are skipped.
  boost::asio::awaitable<Step<v1::DeviceMessage>> exchange(
      const v1::HostMessage& message,
      const std::function<bool(const v1::DeviceMessage&)>& is_stale);
  boost::asio::awaitable<Step<v1::CommandResponse>> signed_exchange(const v1::HostMessage& message,
                                                                    ByteView hashed_part);
  boost::asio::awaitable<Step<Bytes>> fresh_nonce();
  // Offers cached tokens until one is accepted (true) or none is left (false).
  boost::asio::awaitable<Step<bool>> offer_next(RunReport& report);
  boost::asio::awaitable<Step<v1::TokenOfferResult::Outcome>> offer(const CachedToken& token);
  Status remember_nonce(const std::string& nonce);

  transport::MessageLink& link_;
  TokenCache& cache_;
  ClientOptions options_;
  std::function<UnixSeconds()> now_;

  // Per-run state.
  Bytes device_id_;
  Bytes user_id_;
  std::optional<crypto::PublicKey> device_key_;
  Bytes nonce_;
  std::set<Bytes> offered_;
  std::set<std::uint64_t> installed_;
  Error last_refusal_ = v1::ERROR_UNSPECIFIED;  // why the last offered token did not count
  int rounds_ = 0;
};

}  // namespace tollgate::host
