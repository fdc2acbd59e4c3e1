#include "gateway/gateway.hpp"

#include <algorithm>
#include <limits>
#include <utility>

#include "gateway/signed.hpp"

namespace tollgate {
namespace {

constexpr ObjectType kAuthorizationType = v1::Signed::TYPE_CLOUD_KEY_AUTHORIZATION;
constexpr ObjectType kTokenType = v1::Signed::TYPE_DEVICE_TOKEN;
constexpr ObjectType kRequestType = v1::Signed::TYPE_COMMAND_REQUEST;

// parse_signed guarantees a 16-byte signer key id.
crypto::KeyId key_id_of(const v1::Signed& s) {
  crypto::KeyId id{};
  const std::string& raw = s.signer_key_id();
  std::copy_n(raw.begin(), std::min(raw.size(), id.size()), id.begin());
  return id;
}

Bytes to_bytes(const std::string& s) {
  return Bytes(s.begin(), s.end());
}

bool equals(const std::string& s, ByteView b) {
  return s.size() == b.size() &&
         std::equal(b.begin(), b.end(), s.begin(),
                    [](std::uint8_t x, char c) { return x == static_cast<std::uint8_t>(c); });
}

// Saturating addition: a hostile time near INT64_MAX must not wrap into the past.
UnixTime add_seconds(UnixTime t, std::int64_t s) {
  if (s > 0 && t > std::numeric_limits<UnixTime>::max() - s) {
    return std::numeric_limits<UnixTime>::max();
  }
  return t + s;
}

// When no stored token qualifies, the reason reported is the one of the token
// that came closest to qualifying.
int reason_rank(Error e) {
  switch (e) {
    case v1::ERROR_USES_EXHAUSTED:
      return 5;
    case v1::ERROR_EXPIRED:
      return 4;
    case v1::ERROR_UNKNOWN_SIGNER:
      return 3;
    case v1::ERROR_AUTHORIZATION_NOT_INSTALLED:
      return 2;
    case v1::ERROR_REVOKED:
      return 1;
    default:
      return 0;
  }
}

}  // namespace

// A verified, installed authorization with its cloud key parsed once.
struct InstalledAuthorization {
  v1::CloudKeyAuthorization body;
  crypto::PublicKey cloud_key;
};

// A stored token with its user key parsed once, so a command costs exactly one
// signature verification.
struct LiveToken {
  v1::DeviceToken body;
  crypto::PublicKey user_key;
  crypto::KeyId cloud_key_id{};  // the key that signed it
};

struct VerifiedToken {
  TokenInfo info;
  LiveToken live;
};

// Parsed objects for the puts of a delta, moved into the caches once the
// delta is committed.
struct Staged {
  std::map<std::uint64_t, InstalledAuthorization> authorizations;
  std::map<Bytes, LiveToken> tokens;
};

struct Gateway::Impl {
  Bytes device_id;
  std::vector<crypto::PublicKey> masters;
  DevicePolicy policy;
  Storage* storage = nullptr;
  RandomSource random;
  VerifiedSignatures* verified = nullptr;

  // The state the gateway decides on: the last committed state with `dirty`
  // applied. `dirty` holds changes and audit events waiting for the next commit.
  DeviceState state;
  StateDelta dirty;
  std::uint64_t audit_dropped = 0;

  std::map<std::uint64_t, InstalledAuthorization> authorizations;
  std::map<Bytes, LiveToken> tokens;
  std::multimap<crypto::KeyId, Bytes> tokens_by_user;  // user key id -> token id
  std::map<Sha256, RequestKey> request_by_hash;
  // Issue order of the nonces this process handed out: nonces issued in the same
  // second share an expiry, and evicting among them by byte value would make the
  // newest nonce the next victim. Nonces loaded from storage have no entry (order 0)
  // and so go first.
  std::map<Bytes, std::uint64_t> nonce_order;
  std::uint64_t nonce_counter = 0;

  // ---- time, state and commits ----

  UnixTime now(UnixTime clock) const { return std::max(clock, state.time_floor); }

  UnixTime observe(UnixTime clock) {
    if (clock > state.time_floor) {
      state.time_floor = clock;
      dirty.raise_floor(clock);
    }
    return state.time_floor;
  }

  // Applies a delta to the in-memory state and keeps the caches in step.
  void apply_local(const StateDelta& d, Staged staged) {
    for (auto id : d.authorizations_removed) authorizations.erase(id);
    for (auto& [id, a] : staged.authorizations) authorizations.insert_or_assign(id, std::move(a));
    for (const auto& id : d.tokens_removed) forget_token(id);
    for (auto& [id, t] : staged.tokens) remember_token(id, std::move(t));
    for (const auto& key : d.idempotency_removed) {
      if (auto it = state.idempotency.find(key); it != state.idempotency.end()) {
        request_by_hash.erase(it->second.request_hash);
      }
    }
    for (const auto& [key, rec] : d.idempotency_put) request_by_hash[rec.request_hash] = key;
    apply(state, d);
  }

  void forget_token(const Bytes& id) {
    auto it = tokens.find(id);
    if (it == tokens.end()) return;
    auto [lo, hi] = tokens_by_user.equal_range(it->second.user_key.id());
    for (auto u = lo; u != hi; ++u) {
      if (u->second == id) {
        tokens_by_user.erase(u);
        break;
      }
    }
    tokens.erase(it);
  }

  void remember_token(const Bytes& id, LiveToken t) {
    forget_token(id);
    tokens_by_user.emplace(t.user_key.id(), id);
    tokens.emplace(id, std::move(t));
  }

  // A change that needs no commit of its own: takes effect now, persisted later.
  void stage(const StateDelta& d) {
    apply_local(d, {});
    dirty.then(d);
  }

  // Commits everything waiting plus `d` as one delta; only on success does `d`
  // take effect in memory.
  Status commit(const StateDelta& d, Staged staged) {
    StateDelta all = dirty;
    all.then(d);
    if (audit_dropped > 0) {
      AuditEvent dropped;
      dropped.kind = AuditEvent::Kind::kAuditEventsDropped;
      dropped.at = state.time_floor;
      dropped.count = audit_dropped;
      all.audit.insert(all.audit.begin(), std::move(dropped));
    }
    if (!storage->commit(all)) return v1::ERROR_STORAGE;
    apply_local(d, std::move(staged));
    dirty = StateDelta{};
    audit_dropped = 0;
    return {};
  }

  // Queues the audit event of a decision that changed nothing durable. The queue
  // is bounded: when full it is committed on its own; if storage keeps failing,
  // the oldest events are dropped and counted (the count is logged later).
  void queue_audit(AuditEvent ev) {
    dirty.audit.push_back(std::move(ev));
    const std::size_t cap = std::max<std::size_t>(policy.max_pending_audit_events, 1);
    if (dirty.audit.size() < cap) return;
    if (commit(StateDelta{}, {})) return;
    const std::size_t excess = dirty.audit.size() - cap + 1;
    dirty.audit.erase(dirty.audit.begin(),
                      dirty.audit.begin() + static_cast<std::ptrdiff_t>(excess));
    audit_dropped += excess;
  }

  // Rejects with `e`, committing `d` (revocations merged, nonce consumed, ...)
  // with the audit event when it changes state, else queueing the event.
  Error reject(AuditEvent ev, Error e, StateDelta d = {}) {
    ev.accepted = false;
    ev.reason = e;
    if (!d.changes_state()) {
      queue_audit(std::move(ev));
      return e;
    }
    d.audit.push_back(ev);
    if (commit(d, {})) return e;
    ev.reason = v1::ERROR_STORAGE;
    queue_audit(std::move(ev));
    return v1::ERROR_STORAGE;
  }

  // Like reject, for changes that may be persisted later (nonce consumption):
  // they take effect in memory at once.
  Error reject_staged(AuditEvent ev, Error e, const StateDelta& d) {
    stage(d);
    return reject(std::move(ev), e);
  }

  Bytes fresh_nonce() {
    Bytes n = random ? random(kNonceSize) : crypto::random_bytes(kNonceSize);
    n.resize(kNonceSize);
    return n;
  }

  // Adds a new nonce to `d`, evicting expired ones and, beyond the cap, the
  // oldest. `d` may already remove nonces (they no longer count).
  void add_nonce(StateDelta& d, const Bytes& nonce, UnixTime now) {
    const auto order_of = [&](const Bytes& value) -> std::uint64_t {
      const auto it = nonce_order.find(value);
      return it == nonce_order.end() ? 0 : it->second;
    };
    std::size_t live = 0;
    const Bytes* oldest = nullptr;
    std::pair<UnixTime, std::uint64_t> oldest_key{0, 0};
    for (const auto& [value, rec] : state.nonces) {
      if (d.nonces_removed.count(value)) continue;
      if (now >= rec.expires_at) {
        d.remove_nonce(value);
        continue;
      }
      ++live;
      const std::pair<UnixTime, std::uint64_t> key{rec.expires_at, order_of(value)};
      if (!oldest || key < oldest_key) {
        oldest = &value;
        oldest_key = key;
      }
    }
    if (oldest && live >= std::max<std::size_t>(policy.max_nonces_in_flight, 1)) {
      d.remove_nonce(*oldest);
    }
    d.put_nonce(nonce, NonceRecord{add_seconds(now, policy.nonce_lifetime_seconds)});
    // Forget the order of nonces that are gone (bounded by the table's cap).
    std::erase_if(nonce_order, [&](const auto& entry) { return !state.nonces.count(entry.first); });
    nonce_order[nonce] = ++nonce_counter;
  }

  const crypto::PublicKey* master_for(const crypto::KeyId& id) const {
    for (const auto& m : masters) {
      if (m.id() == id) return &m;
    }
    return nullptr;
  }

  bool revoked(std::uint64_t id) const { return state.revoked_ids.count(id) != 0; }

  // ---- tokens ----

  Result<VerifiedToken> verify_token(ByteView bytes, UnixTime now) const {
    auto env = parse_signed(bytes);
    if (!env) return env.error();
    if (env->type() != kTokenType) return v1::ERROR_WRONG_TYPE;
    const crypto::KeyId signer = key_id_of(*env);

    const InstalledAuthorization* by_signer = nullptr;
    for (const auto& [id, a] : authorizations) {
      if (a.cloud_key.id() == signer) {
        by_signer = &a;
        break;
      }
    }
    if (!by_signer) {
      // Nothing to verify with. The body is parsed only to name the reason, so
      // the host knows to install the authorization or drop the token.
      v1::DeviceToken claimed;
      if (!claimed.ParseFromString(env->body())) return v1::ERROR_UNKNOWN_SIGNER;
      if (revoked(claimed.authorization_id())) return v1::ERROR_REVOKED;
      if (!authorizations.count(claimed.authorization_id())) {
        return v1::ERROR_AUTHORIZATION_NOT_INSTALLED;
      }
      return v1::ERROR_UNKNOWN_SIGNER;
    }
    auto body = verify_and_parse<v1::DeviceToken>(*env, kTokenType, by_signer->cloud_key,
                                                  policy.cloud_algorithms);
    if (!body) return body.error();
    const v1::DeviceToken& t = *body;

    if (revoked(t.authorization_id())) return v1::ERROR_REVOKED;
    auto a = authorizations.find(t.authorization_id());
    if (a == authorizations.end()) return v1::ERROR_AUTHORIZATION_NOT_INSTALLED;
    if (a->second.cloud_key.id() != signer) return v1::ERROR_UNKNOWN_SIGNER;
    if (now > a->second.body.not_after()) return v1::ERROR_EXPIRED;

    if (t.token_id().size() != kUuidSize || t.device_id().size() != kUuidSize ||
        t.user_id().size() != kUuidSize || t.authorized_uses() == 0 ||
        t.expires_at() <= t.issued_at()) {
      return v1::ERROR_MALFORMED;
    }
    if (static_cast<std::size_t>(t.roles_size()) > policy.max_roles_per_token) {
      return v1::ERROR_TOO_LARGE;
    }
    for (const auto& r : t.roles()) {
      if (r.size() > policy.max_role_length) return v1::ERROR_TOO_LARGE;
    }
    if (!equals(t.device_id(), device_id)) return v1::ERROR_WRONG_DEVICE;
    if (now >= t.expires_at()) return v1::ERROR_EXPIRED;
    if (t.issued_at() > add_seconds(now, policy.clock_skew_seconds)) return v1::ERROR_NOT_YET_VALID;

    auto user_key = crypto::PublicKey::from_spki_der(as_bytes(t.user_public_key()));
    if (!user_key) return v1::ERROR_MALFORMED;
    if (auto st = policy.user_algorithms.check(*user_key); !st) return st.error();

    const Bytes token_id = to_bytes(t.token_id());
    if (state.tombstones.count(token_id)) return v1::ERROR_USES_EXHAUSTED;

    VerifiedToken v{TokenInfo{}, LiveToken{t, std::move(*user_key), signer}};
    v.info.token = std::move(*body);
    v.info.cloud_key_id = signer;
    v.info.user_key_id = v.live.user_key.id();
    if (auto known = state.tokens.find(token_id); known != state.tokens.end()) {
      v.info.uses_left = known->second.uses_left;
      v.info.already_known = true;
    } else {
      v.info.uses_left = v.info.token.authorized_uses();
    }
    return v;
  }

  // Why a stored token cannot pay `cost` now (UNSPECIFIED: it can).
  Error unusable(const Bytes& id, const LiveToken& t, std::uint32_t cost, UnixTime now) const {
    if (revoked(t.body.authorization_id())) return v1::ERROR_REVOKED;
    auto a = authorizations.find(t.body.authorization_id());
    if (a == authorizations.end()) return v1::ERROR_AUTHORIZATION_NOT_INSTALLED;
    if (a->second.cloud_key.id() != t.cloud_key_id) return v1::ERROR_UNKNOWN_SIGNER;
    if (now > a->second.body.not_after() || now >= t.body.expires_at()) return v1::ERROR_EXPIRED;
    auto stored = state.tokens.find(id);
    if (stored == state.tokens.end() || stored->second.uses_left < cost) {
      return v1::ERROR_USES_EXHAUSTED;
    }
    return v1::ERROR_UNSPECIFIED;
  }

  // Tokens and tombstones that can never be charged again and so may be
  // forgotten safely: expired ones, and ones minted under a revoked authorization.
  void prune_tokens(StateDelta& d, UnixTime now) const {
    for (const auto& [id, t] : tokens) {
      if (now >= t.body.expires_at() || revoked(t.body.authorization_id())) d.remove_token(id);
    }
    for (const auto& [id, expires_at] : state.tombstones) {
      if (now >= expires_at) d.remove_tombstone(id);
    }
  }
};

Gateway::Gateway(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Gateway::Gateway(Gateway&&) noexcept = default;
Gateway& Gateway::operator=(Gateway&&) noexcept = default;
Gateway::~Gateway() = default;

Result<Gateway> Gateway::open(ByteView device_id, std::vector<crypto::PublicKey> master_keys,
                              DevicePolicy policy, Storage& storage, RandomSource random) {
  if (device_id.size() != kUuidSize || master_keys.empty()) return v1::ERROR_MALFORMED;
  auto loaded = storage.load();
  if (!loaded) return v1::ERROR_STORAGE;

  auto impl = std::make_unique<Impl>();
  impl->device_id.assign(device_id.begin(), device_id.end());
  impl->masters = std::move(master_keys);
  impl->policy = std::move(policy);
  impl->storage = &storage;
  impl->random = std::move(random);
  impl->state = std::move(*loaded);

  // Authorizations are verified again: the firmware's master keys or policy may
  // have changed since they were stored. One that fails is uninstalled.
  StateDelta cleanup;
  for (const auto& [id, bytes] : impl->state.authorizations) {
    auto env = parse_signed(bytes);
    const crypto::PublicKey* master = env ? impl->master_for(key_id_of(*env)) : nullptr;
    Result<v1::CloudKeyAuthorization> body = v1::ERROR_UNKNOWN_SIGNER;
    if (master) {
      body = verify_and_parse<v1::CloudKeyAuthorization>(*env, kAuthorizationType, *master,
                                                         impl->policy.master_algorithms);
    }
    auto cloud = body ? crypto::PublicKey::from_spki_der(as_bytes(body->cloud_public_key()))
                      : Result<crypto::PublicKey>(body.error());
    if (!body || !cloud || body->id() != id || impl->revoked(id)) {
      cleanup.remove_authorization(id);
      continue;
    }
    impl->authorizations.emplace(id, InstalledAuthorization{std::move(*body), std::move(*cloud)});
  }
  // Tokens were verified before they were stored in the device's own storage;
  // they are only parsed here. One that no longer parses stays stored (its
  // uses must not be forgotten) but cannot be charged.
  for (const auto& [id, stored] : impl->state.tokens) {
    auto env = parse_signed(stored.signed_bytes);
    if (!env) continue;
    v1::DeviceToken body;
    if (!body.ParseFromString(env->body())) continue;
    auto user_key = crypto::PublicKey::from_spki_der(as_bytes(body.user_public_key()));
    if (!user_key) continue;
    impl->remember_token(id, LiveToken{std::move(body), std::move(*user_key), key_id_of(*env)});
  }
  for (const auto& [key, rec] : impl->state.idempotency)
    impl->request_by_hash[rec.request_hash] = key;
  if (cleanup.changes_state()) impl->stage(cleanup);
  return Gateway(std::move(impl));
}

Result<AuthorizationInfo> Gateway::install_authorization(ByteView signed_bytes, UnixTime clock) {
  Impl& g = *impl_;
  const UnixTime now = g.observe(clock);
  AuditEvent ev;
  ev.kind = AuditEvent::Kind::kInstallAuthorization;
  ev.at = now;
  ev.object_hash = crypto::sha256(signed_bytes);

  auto env = parse_signed(signed_bytes);
  if (!env) return g.reject(ev, env.error());
  ev.signer_key_id = to_bytes(env->signer_key_id());
  if (env->type() != kAuthorizationType) return g.reject(ev, v1::ERROR_WRONG_TYPE);
  const crypto::PublicKey* master = g.master_for(key_id_of(*env));
  if (!master) return g.reject(ev, v1::ERROR_UNKNOWN_SIGNER);
  auto body = verify_and_parse<v1::CloudKeyAuthorization>(*env, kAuthorizationType, *master,
                                                          g.policy.master_algorithms);
  if (!body) return g.reject(ev, body.error());
  const v1::CloudKeyAuthorization& a = *body;
  ev.authorization_id = a.id();

  // The master signed this revocation list, so it counts whatever becomes of
  // the authorization itself. Id 0 names no authorization and is ignored.
  if (static_cast<std::size_t>(a.revoked_ids_size()) > g.policy.max_revoked_ids) {
    return g.reject(ev, v1::ERROR_TOO_LARGE);
  }
  StateDelta d;
  for (auto id : a.revoked_ids()) {
    if (id != 0 && !g.revoked(id)) d.revoked_added.insert(id);
  }
  if (g.state.revoked_ids.size() + d.revoked_added.size() > g.policy.max_revoked_ids) {
    return g.reject(ev, v1::ERROR_LIMIT_REACHED);
  }
  for (auto id : d.revoked_added) {
    if (g.authorizations.count(id)) d.remove_authorization(id);
  }
  for (const auto& [tid, t] : g.tokens) {
    if (d.revoked_added.count(t.body.authorization_id())) d.remove_token(tid);
  }

  AuthorizationInfo info;
  info.id = a.id();
  info.not_before = a.not_before();
  info.not_after = a.not_after();
  info.revocations_added = d.revoked_added.size();

  if (a.id() == 0 || a.not_before() > a.not_after()) return g.reject(ev, v1::ERROR_MALFORMED, d);
  if (g.revoked(a.id()) || d.revoked_added.count(a.id())) {
    return g.reject(ev, v1::ERROR_REVOKED, d);
  }
  if (now > a.not_after()) return g.reject(ev, v1::ERROR_EXPIRED, d);
  if (a.not_before() > add_seconds(now, g.policy.clock_skew_seconds)) {
    return g.reject(ev, v1::ERROR_NOT_YET_VALID, d);
  }
  auto cloud = crypto::PublicKey::from_spki_der(as_bytes(a.cloud_public_key()));
  if (!cloud) return g.reject(ev, v1::ERROR_MALFORMED, d);
  if (auto st = g.policy.cloud_algorithms.check(*cloud); !st) return g.reject(ev, st.error(), d);
  info.cloud_key_id = cloud->id();

  bool install = true;
  if (auto it = g.authorizations.find(a.id()); it != g.authorizations.end()) {
    // Same id again: the same bytes change nothing; another version replaces
    // the installed one only if it lasts longer (ties: the larger bytes win), so
    // the outcome does not depend on the order the versions arrive in.
    const Bytes& held = g.state.authorizations.at(a.id());
    const auto order = std::lexicographical_compare_three_way(
        signed_bytes.begin(), signed_bytes.end(), held.begin(), held.end());
    const auto installed_until = it->second.body.not_after();
    install = a.not_after() > installed_until || (a.not_after() == installed_until && order > 0);
    info.already_installed = !install;
  } else {
    std::size_t installed = g.authorizations.size() - d.authorizations_removed.size();
    if (installed >= g.policy.max_authorizations) {
      for (const auto& [id, other] : g.authorizations) {
        if (now > other.body.not_after() && !d.authorizations_removed.count(id)) {
          d.remove_authorization(id);
          --installed;
        }
      }
    }
    if (installed >= g.policy.max_authorizations) return g.reject(ev, v1::ERROR_LIMIT_REACHED, d);
  }

  ev.accepted = true;
  Staged staged;
  if (install) {
    d.put_authorization(a.id(), Bytes(signed_bytes.begin(), signed_bytes.end()));
    staged.authorizations.emplace(a.id(), InstalledAuthorization{a, std::move(*cloud)});
  }
  if (!d.changes_state()) {
    g.queue_audit(std::move(ev));
    return info;
  }
  d.audit.push_back(ev);
  if (!g.commit(d, std::move(staged))) {
    ev.accepted = false;
    ev.reason = v1::ERROR_STORAGE;
    g.queue_audit(std::move(ev));
    return v1::ERROR_STORAGE;
  }
  return info;
}

Result<TokenInfo> Gateway::check_token(ByteView signed_bytes, UnixTime clock) const {
  auto v = impl_->verify_token(signed_bytes, impl_->now(clock));
  if (!v) return v.error();
  return std::move(v->info);
}

Result<TokenInfo> Gateway::offer_token(ByteView signed_bytes, UnixTime clock) {
  Impl& g = *impl_;
  const UnixTime now = g.observe(clock);
  AuditEvent ev;
  ev.kind = AuditEvent::Kind::kOfferToken;
  ev.at = now;
  ev.object_hash = crypto::sha256(signed_bytes);

  auto v = g.verify_token(signed_bytes, now);
  if (!v) return g.reject(ev, v.error());
  TokenInfo& info = v->info;
  ev.token_id = to_bytes(info.token.token_id());
  ev.authorization_id = info.token.authorization_id();
  ev.signer_key_id.assign(info.cloud_key_id.begin(), info.cloud_key_id.end());
  ev.uses_left = info.uses_left;

  StateDelta d;
  // The cloud vouches that it was at least issued_at when it minted the token.
  if (info.token.issued_at() > g.state.time_floor) d.raise_floor(info.token.issued_at());
  Staged staged;
  if (!info.already_known) {
    std::size_t held = g.state.tokens.size() + g.state.tombstones.size();
    if (held >= g.policy.max_tokens) {
      g.prune_tokens(d, now);
      held -= d.tokens_removed.size() + d.tombstones_removed.size();
    }
    if (held >= g.policy.max_tokens) return g.reject(ev, v1::ERROR_LIMIT_REACHED, d);
    d.put_token(ev.token_id, StoredToken{Bytes(signed_bytes.begin(), signed_bytes.end()),
                                         info.token.authorized_uses()});
    staged.tokens.emplace(ev.token_id, std::move(v->live));
  }
  ev.accepted = true;
  if (info.already_known) {
    // Nothing new to persist: the floor rides on the next commit.
    g.stage(d);
    g.queue_audit(std::move(ev));
    return std::move(info);
  }
  d.audit.push_back(ev);
  if (!g.commit(d, std::move(staged))) {
    ev.accepted = false;
    ev.reason = v1::ERROR_STORAGE;
    g.queue_audit(std::move(ev));
    return v1::ERROR_STORAGE;
  }
  return std::move(info);
}

Bytes Gateway::issue_nonce(UnixTime clock) {
  Impl& g = *impl_;
  const UnixTime now = g.observe(clock);
  Bytes nonce = g.fresh_nonce();
  StateDelta d;
  g.add_nonce(d, nonce, now);
  g.stage(d);
  return nonce;
}

Result<Decision> Gateway::authorize_command(ByteView signed_request_bytes, UnixTime clock,
                                            const CommandRules& rules) {
  Impl& g = *impl_;
  const UnixTime now = g.observe(clock);
  AuditEvent ev;
  ev.kind = AuditEvent::Kind::kAuthorizeCommand;
  ev.at = now;

  auto env = parse_signed(signed_request_bytes);
  if (!env) return g.reject(ev, env.error());
  const Sha256 hash = crypto::sha256(signed_request_bytes);
  ev.object_hash = hash;
  ev.signer_key_id = to_bytes(env->signer_key_id());
  if (env->type() != kRequestType) return g.reject(ev, v1::ERROR_WRONG_TYPE);
  const crypto::KeyId signer = key_id_of(*env);

  // Identical bytes were verified and charged before: answer from the cache.
  auto seen = g.request_by_hash.find(hash);
  auto cached = seen == g.request_by_hash.end() ? g.state.idempotency.end()
                                                : g.state.idempotency.find(seen->second);
  if (cached != g.state.idempotency.end()) {
    const IdempotencyRecord& rec = cached->second;
    Decision out;
    out.key = seen->second;
    out.request_hash = hash;
    out.token_id = rec.token_id;
    out.uses_left = rec.uses_left;
    out.kind = rec.response ? Decision::Kind::kReplay : Decision::Kind::kInterrupted;
    if (rec.response) out.stored_response = *rec.response;
    ev.kind = AuditEvent::Kind::kReplay;
    ev.accepted = true;
    ev.request_id = out.key.request_id;
    ev.token_id = rec.token_id;
    ev.uses_left = rec.uses_left;
    g.queue_audit(std::move(ev));
    return out;
  }

  auto [first, last] = g.tokens_by_user.equal_range(signer);
  if (first == last) return g.reject(ev, v1::ERROR_NO_VALID_TOKEN);
  const crypto::PublicKey& user_key = g.tokens.at(first->second).user_key;
  if (!g.verified || !g.verified->take(*env, kRequestType, user_key.id())) {
    if (auto st = verify_signed(*env, kRequestType, user_key, g.policy.user_algorithms); !st) {
      return g.reject(ev, st.error());
    }
  }
  v1::CommandRequest req;
  if (!req.ParseFromString(env->body())) return g.reject(ev, v1::ERROR_MALFORMED);
  ev.request_id = req.request_id();
  ev.command = req.command();

  // A verified request uses up its nonce whatever the outcome, so the nonce
  // cannot be tried again with other bytes.
  StateDelta consume;
  bool nonce_fresh = false;
  const Bytes nonce = to_bytes(req.nonce());
  if (auto n = g.state.nonces.find(nonce); n != g.state.nonces.end()) {
    nonce_fresh = now < n->second.expires_at;
    consume.remove_nonce(nonce);
  }

  const RequestKey key{signer, req.request_id()};
  if (g.state.idempotency.count(key)) {
    return g.reject_staged(ev, v1::ERROR_REQUEST_ID_REUSED, consume);
  }
  if (!equals(req.device_id(), g.device_id)) {
    return g.reject_staged(ev, v1::ERROR_WRONG_DEVICE, consume);
  }
  if (!nonce_fresh) return g.reject_staged(ev, v1::ERROR_STALE_NONCE, consume);
  auto rule_it = rules.find(req.command());
  if (rule_it == rules.end()) return g.reject_staged(ev, v1::ERROR_UNKNOWN_COMMAND, consume);
  const CommandRule& rule = rule_it->second;
  if (rule.validator && !rule.validator(req.arguments())) {
    return g.reject_staged(ev, v1::ERROR_BAD_ARGUMENT, consume);
  }

  // Pick the token: it must grant a role the command accepts, be valid now and
  // have uses >= cost; the soonest-expiring one pays, so uses are not stranded.
  const Bytes* chosen = nullptr;
  const LiveToken* chosen_token = nullptr;
  bool any_role = false;
  Error why = v1::ERROR_UNSPECIFIED;
  for (auto it = first; it != last; ++it) {
    const LiveToken& t = g.tokens.at(it->second);
    bool grants = rule.roles.empty();
    for (const auto& r : t.body.roles()) grants = grants || rule.roles.count(r) != 0;
    if (!grants) continue;
    any_role = true;
    const Error e = g.unusable(it->second, t, rule.cost, now);
    if (e != v1::ERROR_UNSPECIFIED) {
      if (reason_rank(e) > reason_rank(why)) why = e;
      continue;
    }
    if (!chosen || t.body.expires_at() < chosen_token->body.expires_at() ||
        (t.body.expires_at() == chosen_token->body.expires_at() && it->second < *chosen)) {
      chosen = &it->second;
      chosen_token = &t;
    }
  }
  if (!any_role) return g.reject_staged(ev, v1::ERROR_ROLE_NOT_ALLOWED, consume);
  if (!chosen) {
    return g.reject_staged(ev, why == v1::ERROR_UNSPECIFIED ? v1::ERROR_NO_VALID_TOKEN : why,
                           consume);
  }

  // Charge, consume the nonce, issue the next one and open the idempotency
  // entry in ONE commit; the caller executes only after it succeeded.
  StateDelta d = consume;
  const StoredToken& stored = g.state.tokens.at(*chosen);
  const std::uint32_t uses_left = stored.uses_left - rule.cost;
  if (rule.cost > 0) {
    if (uses_left == 0) {
      d.remove_token(*chosen);
      d.put_tombstone(*chosen, chosen_token->body.expires_at());
    } else {
      d.put_token(*chosen, StoredToken{stored.signed_bytes, uses_left});
    }
  }
  Decision out;
  out.kind = Decision::Kind::kExecute;
  out.key = key;
  out.request_hash = hash;
  out.token_id = *chosen;
  out.cost = rule.cost;
  out.uses_left = uses_left;
  out.next_nonce = g.fresh_nonce();
  g.add_nonce(d, out.next_nonce, now);

  IdempotencyRecord rec;
  rec.request_hash = hash;
  rec.sequence = g.state.next_sequence;
  rec.token_id = *chosen;
  rec.uses_left = uses_left;
  d.next_sequence = rec.sequence + 1;
  if (g.state.idempotency.size() >= std::max<std::size_t>(g.policy.idempotency_cache_size, 1)) {
    auto oldest = std::min_element(
        g.state.idempotency.begin(), g.state.idempotency.end(),
        [](const auto& x, const auto& y) { return x.second.sequence < y.second.sequence; });
    d.remove_idempotency(oldest->first);
  }
  d.put_idempotency(key, std::move(rec));

  ev.accepted = true;
  ev.token_id = *chosen;
  ev.authorization_id = chosen_token->body.authorization_id();
  ev.uses_charged = rule.cost;
  ev.uses_left = uses_left;
  d.audit.push_back(ev);
  if (!g.commit(d, {})) {
    ev.accepted = false;
    ev.reason = v1::ERROR_STORAGE;
    g.queue_audit(std::move(ev));
    return v1::ERROR_STORAGE;
  }
  out.request = std::move(req);
  return out;
}

Status Gateway::complete_request(const RequestKey& key, ByteView response_bytes) {
  Impl& g = *impl_;
  if (response_bytes.size() > g.policy.max_response_size) return v1::ERROR_TOO_LARGE;
  auto it = g.state.idempotency.find(key);
  if (it == g.state.idempotency.end()) return v1::ERROR_INTERNAL;
  IdempotencyRecord rec = it->second;
  rec.response = Bytes(response_bytes.begin(), response_bytes.end());
  StateDelta d;
  d.put_idempotency(key, std::move(rec));
  g.stage(d);
  return {};
}

Status Gateway::flush(UnixTime clock) {
  Impl& g = *impl_;
  g.observe(clock);
  if (g.dirty.empty() && g.audit_dropped == 0) return {};
  return g.commit(StateDelta{}, {});
}

void Gateway::use_verified_signatures(VerifiedSignatures* verified) {
  impl_->verified = verified;
}

std::optional<crypto::PublicKey> Gateway::user_key(const crypto::KeyId& signer) const {
  auto it = impl_->tokens_by_user.find(signer);
  if (it == impl_->tokens_by_user.end()) return std::nullopt;
  return impl_->tokens.at(it->second).user_key.clone();
}

UnixTime Gateway::now(UnixTime clock) const {
  return impl_->now(clock);
}
UnixTime Gateway::time_floor() const {
  return impl_->state.time_floor;
}
const DeviceState& Gateway::state() const {
  return impl_->state;
}
const StateDelta& Gateway::pending() const {
  return impl_->dirty;
}
ByteView Gateway::device_id() const {
  return impl_->device_id;
}
const DevicePolicy& Gateway::policy() const {
  return impl_->policy;
}

}  // namespace tollgate
