#include "tools/cloud/authority.hpp"

#include <boost/json.hpp>

#include <algorithm>
#include <chrono>
#include <limits>
#include <set>
#include <type_traits>

#include "gateway/signed.hpp"
#include "instrument/audit.hpp"
#include "tools/cloud/codec.hpp"

namespace tollgate::cloud {

namespace json = boost::json;

namespace {

// Thrown inside a handler to answer with a specific error; nothing was written
// before any throw site (each handler validates fully, then commits once).
struct ApiFailure {
  int status;
  std::string code;
  std::string message;
};

[[noreturn]] void fail(int status, std::string code, std::string message) {
  throw ApiFailure{status, std::move(code), std::move(message)};
}

ApiResponse json_response(int status, const json::value& v) {
  return ApiResponse{status, json::serialize(v)};
}

ApiResponse error_response(int status, const std::string& code, const std::string& message) {
  return json_response(status, json::object{{"error", code}, {"message", message}});
}

std::string str(ByteView b) {
  return std::string(as_chars(b));
}

// A JSON request body: an object whose every field the handler names.
class Body {
 public:
  Body(const json::object& o, std::initializer_list<std::string_view> allowed) : o_(o) {
    for (const auto& kv : o) {
      if (std::find(allowed.begin(), allowed.end(), kv.key()) == allowed.end()) {
        fail(
            400, "unknown_field",
            "the request has a field this endpoint does not take: '" + std::string(kv.key()) + "'");
      }
    }
  }

  std::string string(std::string_view name, std::size_t max_size) const {
    auto s = optional_string(name, max_size);
    if (!s) fail(400, "missing_field", "the request lacks the field '" + std::string(name) + "'");
    return *s;
  }
  std::optional<std::string> optional_string(std::string_view name, std::size_t max_size) const {
    const json::value* v = o_.if_contains(name);
    if (!v) return std::nullopt;
    if (!v->is_string()) fail(400, "bad_field", "'" + std::string(name) + "' must be a string");
    const json::string& s = v->get_string();
    if (s.size() > max_size) {
      fail(400, "bad_field",
           "'" + std::string(name) + "' is longer than " + std::to_string(max_size) + " bytes");
    }
    return std::string(s);
  }
  std::optional<std::uint64_t> optional_uint(std::string_view name, std::uint64_t min,
                                             std::uint64_t max) const {
    const json::value* v = o_.if_contains(name);
    if (!v) return std::nullopt;
    std::uint64_t n = 0;
    if (v->is_uint64()) {
      n = v->get_uint64();
    } else if (v->is_int64() && v->get_int64() >= 0) {
      n = static_cast<std::uint64_t>(v->get_int64());
    } else {
      fail(400, "bad_field", "'" + std::string(name) + "' must be a whole number");
    }
    if (n < min || n > max) {
      fail(400, "bad_field",
           "'" + std::string(name) + "' must be between " + std::to_string(min) + " and " +
               std::to_string(max));
    }
    return n;
  }
  Bytes base64(std::string_view name, std::size_t max_size) const {
    auto b = base64_decode(string(name, max_size * 4 / 3 + 4));
    if (!b) fail(400, "bad_field", "'" + std::string(name) + "' is not canonical base64");
    return *b;
  }
  Bytes uuid(std::string_view name) const {
    auto b = uuid_from_string(string(name, 36));
    if (!b) fail(400, "bad_field", "'" + std::string(name) + "' is not a UUID (8-4-4-4-12)");
    return *b;
  }
  Bytes hex(std::string_view name, std::size_t size) const {
    auto b = optional_hex(name, size);
    if (!b) fail(400, "missing_field", "the request lacks the field '" + std::string(name) + "'");
    return *b;
  }
  std::optional<Bytes> optional_hex(std::string_view name, std::size_t size) const {
    auto s = optional_string(name, size * 2);
    if (!s) return std::nullopt;
    auto b = from_hex(*s);
    if (!b || b->size() != size) {
      fail(400, "bad_field",
           "'" + std::string(name) + "' must be " + std::to_string(size * 2) + " hex digits");
    }
    return *b;
  }

 private:
  const json::object& o_;
};

crypto::PublicKey parse_user_key(ByteView der) {
  auto key = crypto::PublicKey::from_spki_der(der);
  if (!key) fail(400, "bad_public_key", "public_key is not a supported SPKI DER public key");
  if (auto st = AlgorithmPolicy{}.check(*key); !st) {
    fail(400, "bad_public_key",
         "public_key is refused by the algorithm policy (" + std::string(error_name(st.error())) +
             ")");
  }
  return std::move(key).value();
}

// Random bytes for token ids, drawn from the CSPRNG 4 KiB at a time per thread:
// one RAND_bytes call per 16-byte id cost more than the rest of the id. (This
// program never forks; a forked child would repeat ids, which the issuances
// primary key refuses.)
void fill_random(std::uint8_t* out, std::size_t n) {
  thread_local Bytes pool;
  thread_local std::size_t used = 0;
  if (pool.size() - used < n) {
    pool = crypto::random_bytes(4096);
    used = 0;
  }
  std::copy_n(pool.begin() + static_cast<std::ptrdiff_t>(used), n, out);
  // Handed-out bytes do not stay behind in the pool.
  std::fill_n(pool.begin() + static_cast<std::ptrdiff_t>(used), n, std::uint8_t{0});
  used += n;
}

// A token id is a UUIDv7 (RFC 9562, 5.7): 48 bits of Unix milliseconds, then
// 74 random bits. Ids in time order keep the issuances index's inserts on its
// last page, so a group commit writes that one page instead of one random
// page per token (less WAL written and fsync'd per mint). The millisecond
// tells a token holder nothing issued_at does not; uniqueness rests on the
// random bits, as before. Tokens made elsewhere may carry any id.
Bytes new_token_id() {
  Bytes id(16);
  fill_random(id.data(), id.size());
  const auto ms =
      static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                     std::chrono::system_clock::now().time_since_epoch())
                                     .count());
  for (std::size_t i = 0; i < 6; ++i) {
    id[i] = static_cast<std::uint8_t>(ms >> (40 - 8 * i));
  }
  id[6] = static_cast<std::uint8_t>((id[6] & 0x0f) | 0x70);  // version 7
  id[8] = static_cast<std::uint8_t>((id[8] & 0x3f) | 0x80);  // RFC 9562 variant
  return id;
}

json::object token_json(const IssuanceRecord& r, ByteView signed_bytes,
                        const json::storage_ptr& sp) {
  return json::object({{"token_id", uuid_to_string(r.token_id)},
                       {"token", base64_encode(signed_bytes)},
                       {"uses", r.uses},
                       {"issued_at", r.issued_at},
                       {"expires_at", r.expires_at}},
                      sp);
}

}  // namespace

Bytes enrollment_signing_input(ByteView challenge, ByteView user_id, ByteView spki_der) {
  Bytes out(kEnrollmentLabel.begin(), kEnrollmentLabel.end());
  out.insert(out.end(), challenge.begin(), challenge.end());
  out.insert(out.end(), user_id.begin(), user_id.end());
  out.insert(out.end(), spki_der.begin(), spki_der.end());
  return out;
}

struct Authority::Context {
  const ApiRequest& request;
  UnixTime now;
  json::object body;               // POST only
  std::optional<UserRecord> user;  // set once authenticated
  // store_.change_version() read before this request's first cached read.
  std::optional<std::uint64_t> version;
};

struct Authority::SessionView {
  SessionRecord session;
  std::optional<UserRecord> user;  // absent: the session's user is gone
};

// The stored authorization, parsed; `usable` when it vouches for our key (its
// validity period is still checked against each request's time).
struct Authority::AuthorizationView {
  Bytes bytes;
  bool usable = false;
  v1::CloudKeyAuthorization auth;
};

// What a token request reads before it signs: the session and its user, the
// entitlement's terms, the device, the user's keys, the parsed authorization.
// Every entry belongs to one change_version() value; a request that reads a
// newer value empties the cache, and a miss is filled only while the cache
// still holds the value the request read BEFORE its lookup, so an entry is
// never older than the version it is filed under. A change by any process is
// therefore seen by every request that starts after it committed, exactly as
// without the cache. Only present rows are cached, so e.g. a new session
// (which does not move the version) is simply a miss. The entitlement's
// balance is NOT current here: the store's guard reserves from the row itself.
struct Authority::ReadCache {
  static constexpr std::size_t kMaxEntries = 4096;  // per table; a full table is emptied
  std::mutex mu;
  std::uint64_t version = 0;
  std::unordered_map<std::string, std::shared_ptr<const SessionView>> sessions;
  std::unordered_map<std::string, std::shared_ptr<const EntitlementRecord>> entitlements;
  std::unordered_map<std::string, std::shared_ptr<const DeviceRecord>> devices;
  std::unordered_map<std::string, std::shared_ptr<const std::vector<UserKeyRecord>>> keys;
  std::unordered_map<std::string, std::shared_ptr<const AuthorizationView>> authorization;
  // Also without a version: parsing is skipped while the stored bytes are unchanged.
  std::shared_ptr<const AuthorizationView> last_parsed;

  // Under mu: moves to `v` if it is newer, forgetting everything.
  void observe(std::uint64_t v) {
    if (v <= version) return;
    version = v;
    sessions.clear();
    entitlements.clear();
    devices.clear();
    keys.clear();
    authorization.clear();
  }
};

Authority::Authority(CloudStore& store, crypto::PrivateKey cloud_key, Clock clock,
                     AuthorityOptions options)
    : store_(store),
      cloud_key_(std::move(cloud_key)),
      clock_(std::move(clock)),
      options_(options),
      dummy_hash_(hash_password("tollgate-dummy", options.argon2)),
      cache_(std::make_unique<ReadCache>()) {}

Authority::~Authority() = default;

template <class T, class Load>
std::shared_ptr<const T> Authority::cached(
    std::unordered_map<std::string, std::shared_ptr<const T>>& table, const std::string& key,
    std::optional<std::uint64_t> version, Load load) {
  if (version) {
    std::lock_guard lock(cache_->mu);
    cache_->observe(*version);
    if (cache_->version == *version) {
      if (auto it = table.find(key); it != table.end()) return it->second;
    }
  }
  auto loaded = load();
  if (!loaded) return nullptr;
  std::shared_ptr<const T> value;
  if constexpr (std::is_same_v<decltype(loaded), std::shared_ptr<const T>>) {
    value = std::move(loaded);
  } else {
    value = std::make_shared<const T>(std::move(*loaded));
  }
  if (version) {
    std::lock_guard lock(cache_->mu);
    cache_->observe(*version);
    if (cache_->version == *version) {
      if (table.size() >= ReadCache::kMaxEntries) table.clear();
      table[key] = value;
    }
  }
  return value;
}

std::shared_ptr<const Authority::SessionView> Authority::session_view(
    ByteView secret_hash, std::optional<std::uint64_t> version) {
  return cached(cache_->sessions, str(secret_hash), version, [&]() -> std::optional<SessionView> {
    auto s = store_.session(secret_hash);
    if (!s) return std::nullopt;
    auto user = store_.user_by_id(s->user_id);
    return SessionView{std::move(*s), std::move(user)};
  });
}

std::shared_ptr<const Authority::AuthorizationView> Authority::authorization_view(
    std::optional<std::uint64_t> version) {
  return cached(cache_->authorization, std::string(), version,
                [&]() -> std::shared_ptr<const AuthorizationView> {
                  auto bytes = store_.authorization();
                  if (!bytes) return std::make_shared<const AuthorizationView>();
                  {
                    std::lock_guard lock(cache_->mu);
                    if (cache_->last_parsed && cache_->last_parsed->bytes == *bytes) {
                      return cache_->last_parsed;
                    }
                  }
                  auto view = std::make_shared<AuthorizationView>();
                  view->bytes = *bytes;
                  auto parsed = parse_signed(*bytes);
                  view->usable =
                      parsed && view->auth.ParseFromString(parsed->body()) &&
                      view->auth.cloud_public_key() == str(cloud_key_.public_key().spki_der());
                  std::lock_guard lock(cache_->mu);
                  cache_->last_parsed = view;
                  return view;
                });
}

ApiResponse Authority::handle(const ApiRequest& request) {
  try {
    return route(request);
  } catch (const ApiFailure& f) {
    return error_response(f.status, f.code, f.message);
  } catch (const StoreError& e) {
    return error_response(503, "storage_unavailable",
                          "the authority's database failed; nothing was changed");
  } catch (const std::exception& e) {
    return error_response(500, "internal", "the authority failed to handle the request");
  }
}

ApiResponse Authority::route(const ApiRequest& r) {
  std::string path = r.target.substr(0, r.target.find('?'));
  Context c{r, clock_(), {}, std::nullopt, std::nullopt};

  struct Route {
    std::string_view method;
    std::string_view path;
    bool authenticated;
    ApiResponse (Authority::*fn)(const Context&);
  };
  static const Route routes[] = {
      {"POST", "/v1/login", false, &Authority::login},
      {"POST", "/v1/enroll/challenge", true, &Authority::enroll_challenge},
      {"POST", "/v1/enroll", true, &Authority::enroll},
      {"POST", "/v1/tokens", true, &Authority::mint},
      {"GET", "/v1/authorization", false, &Authority::get_authorization},
      {"POST", "/v1/receipts", true, &Authority::receipts},
  };
  const Route* found = nullptr;
  bool path_known = false;
  std::string device_id;
  constexpr std::string_view kDevices = "/v1/devices/";
  const bool device_path = path.rfind(kDevices, 0) == 0 && path.size() > kDevices.size();
  for (const Route& rt : routes) {
    if (rt.path != path) continue;
    path_known = true;
    if (rt.method == r.method) found = &rt;
  }
  if (device_path) {
    path_known = true;
    device_id = path.substr(kDevices.size());
  }
  if (!path_known) fail(404, "not_found", "no endpoint " + path + " (see docs/CLOUD.md)");
  if (device_path ? r.method != "GET" : found == nullptr) {
    fail(405, "method_not_allowed", r.method + " is not allowed on " + path);
  }

  if (r.method == "POST") {
    std::string_view ct = r.content_type;
    ct = ct.substr(0, ct.find(';'));
    while (!ct.empty() && ct.back() == ' ') ct.remove_suffix(1);
    if (ct != "application/json") {
      fail(415, "unsupported_media_type", "POST bodies must be Content-Type: application/json");
    }
    boost::system::error_code ec;
    json::parse_options po;
    po.max_depth = 8;
    json::value v = json::parse(r.body, ec, {}, po);
    if (ec) fail(400, "malformed_json", "the body is not valid JSON: " + ec.message());
    if (!v.is_object()) fail(400, "malformed_json", "the body must be a JSON object");
    c.body = std::move(v.get_object());
  }

  const bool authenticated = device_path || (found && found->authenticated);
  if (authenticated) {
    constexpr std::string_view kBearer = "Bearer ";
    std::string_view h = r.authorization;
    if (h.rfind(kBearer, 0) != 0) {
      fail(401, "unauthenticated", "this endpoint needs 'Authorization: Bearer <session>'");
    }
    auto secret = from_hex(h.substr(kBearer.size()));
    if (!secret || secret->size() != 32) fail(401, "invalid_session", "unknown session");
    auto hash = crypto::sha256(*secret);
    c.version = store_.change_version();
    auto s = session_view(ByteView(hash), c.version);
    if (!s) fail(401, "invalid_session", "unknown session (log in again)");
    if (c.now >= s->session.expires_at) {
      fail(401, "session_expired", "the session expired; log in again");
    }
    c.user = s->user;
    if (!c.user || c.user->revoked) fail(401, "invalid_session", "unknown session");
  }
  if (device_path) return get_device(c, device_id);
  return (this->*(found->fn))(c);
}

bool Authority::allow(std::map<std::string, std::pair<UnixTime, std::uint32_t>>& table,
                      const std::string& key, std::uint32_t limit, UnixTime now, bool count) {
  std::lock_guard lock(limits_mu_);
  const UnixTime window = now / 60;
  auto& slot = table[key];
  if (slot.first != window) slot = {window, 0};
  // Bounded memory: stale windows are dropped when the table grows.
  if (table.size() > 100000) {
    std::erase_if(table, [&](const auto& kv) { return kv.second.first != window; });
  }
  auto& current = table[key];
  if (current.second >= limit) return false;
  if (count) ++current.second;
  return true;
}

void Authority::count_failure(const std::string& user, UnixTime now) {
  std::lock_guard lock(limits_mu_);
  auto& slot = login_failures_[user];
  if (slot.first != now / 60) slot = {now / 60, 0};
  ++slot.second;
}

ApiResponse Authority::login(const Context& c) {
  Body b(c.body, {"user", "password"});
  const std::string name = b.string("user", 128);
  const std::string password = b.string("password", 1024);
  if (!allow(login_failures_, name, options_.login_failures_per_minute, c.now, false)) {
    fail(429, "rate_limited", "too many failed logins for this user; wait a minute");
  }
  auto user = store_.user_by_name(name);
  bool ok = false;
  {
    password_checks_.acquire();
    ok = verify_password(password, user ? user->password_hash : dummy_hash_);
    password_checks_.release();
  }
  if (!user || !ok) {
    count_failure(name, c.now);
    fail(401, "bad_credentials", "unknown user or wrong password");
  }
  if (user->revoked) fail(403, "user_revoked", "this user's access has been revoked");
  const Bytes secret = crypto::random_bytes(32);
  const auto hash = crypto::sha256(secret);
  const UnixTime expires = c.now + options_.session_ttl;
  store_.add_session(ByteView(hash), user->id, expires, c.now);
  return json_response(200, json::object{{"session", to_hex(secret)},
                                         {"user_id", uuid_to_string(user->id)},
                                         {"expires_at", expires}});
}

ApiResponse Authority::enroll_challenge(const Context& c) {
  Body b(c.body, {"public_key"});
  const Bytes der = b.base64("public_key", 2048);
  const crypto::PublicKey key = parse_user_key(der);
  ChallengeRecord ch;
  ch.id = crypto::random_bytes(16);
  ch.user_id = c.user->id;
  ch.challenge = crypto::random_bytes(32);
  ch.public_key = key.spki_der();
  ch.expires_at = c.now + options_.challenge_ttl;
  if (!store_.add_challenge(ch, c.now)) {
    fail(429, "too_many_challenges", "too many open enrollment challenges; use or let them expire");
  }
  return json_response(200, json::object{{"challenge_id", to_hex(ch.id)},
                                         {"challenge", base64_encode(ch.challenge)},
                                         {"key_id", to_hex(key.id())},
                                         {"expires_at", ch.expires_at}});
}

ApiResponse Authority::enroll(const Context& c) {
  Body b(c.body, {"challenge_id", "signature"});
  const Bytes id = b.hex("challenge_id", 16);
  const Bytes signature = b.base64("signature", crypto::kMaxSignatureSize);
  auto ch = store_.challenge(id);
  // Another user's challenge is as unknown as a made-up one.
  if (!ch || ch->user_id != c.user->id) fail(404, "unknown_challenge", "no such challenge");
  if (ch->used) fail(409, "challenge_used", "this challenge was already used; ask for a new one");
  if (c.now >= ch->expires_at) fail(410, "challenge_expired", "the challenge expired");
  const crypto::PublicKey key = parse_user_key(ch->public_key);
  const Bytes input = enrollment_signing_input(ch->challenge, c.user->id, ch->public_key);
  if (!key.verify(input, signature)) {
    fail(403, "proof_failed", "the signature does not prove possession of the key");
  }
  UserKeyRecord rec{Bytes(key.id().begin(), key.id().end()), key.spki_der(), c.now};
  if (!store_.consume_challenge_and_enroll(id, c.user->id, rec)) {
    fail(409, "challenge_used", "this challenge was already used; ask for a new one");
  }
  return json_response(200, json::object{{"key_id", to_hex(key.id())}, {"enrolled_at", c.now}});
}

ApiResponse Authority::mint(const Context& c) {
  Body b(c.body, {"device_id", "uses", "count", "key_id"});
  const Bytes device_id = b.uuid("device_id");
  const auto count = static_cast<std::uint32_t>(
      b.optional_uint("count", 1, options_.max_tokens_per_request).value_or(1));
  const auto requested_uses = b.optional_uint("uses", 1, std::numeric_limits<std::uint32_t>::max());
  const auto key_id = b.optional_hex("key_id", crypto::kKeyIdSize);

  const std::string user_key = str(c.user->id);
  if (!allow(mint_window_, user_key, options_.mint_requests_per_minute, c.now, true)) {
    fail(429, "rate_limited", "too many token requests; wait a minute");
  }

  // Unknown devices and other users' devices look the same: no enumeration.
  const std::string device_key = str(device_id);
  auto ent = cached(cache_->entitlements, user_key + device_key, c.version,
                    [&] { return store_.entitlement(c.user->id, device_id); });
  if (!ent ||
      !cached(cache_->devices, device_key, c.version, [&] { return store_.device(device_id); })) {
    fail(403, "not_entitled", "you hold no entitlement for this device");
  }

  const auto keys_ptr = cached(cache_->keys, user_key, c.version, [&] {
    return std::optional<std::vector<UserKeyRecord>>(store_.user_keys(c.user->id));
  });
  const std::vector<UserKeyRecord>& keys = *keys_ptr;
  if (keys.empty()) fail(409, "no_enrolled_key", "enroll a public key before requesting tokens");
  const UserKeyRecord* key = &keys.back();
  if (key_id) {
    auto it = std::find_if(keys.begin(), keys.end(),
                           [&](const UserKeyRecord& k) { return k.key_id == *key_id; });
    if (it == keys.end()) fail(404, "unknown_key", "key_id names no key enrolled by this user");
    key = &*it;
  }

  // The authorization the tokens are minted under: it must vouch for our key, now.
  const auto auth_view = authorization_view(c.version);
  const v1::CloudKeyAuthorization& auth = auth_view->auth;
  {
    if (!auth_view->usable) {
      fail(503, "no_authorization", "the authority has no authorization for its signing key");
    }
    if (c.now < auth.not_before() || c.now >= auth.not_after()) {
      fail(503, "no_authorization", "the authority's key authorization is not valid now");
    }
  }

  const std::uint32_t per_token = ent->uses_per_token;
  const std::uint32_t uses =
      requested_uses ? static_cast<std::uint32_t>(*requested_uses) : per_token;
  if (uses > per_token) {
    fail(403, "entitlement_exceeded",
         "the entitlement allows at most " + std::to_string(per_token) + " uses per token");
  }
  UnixTime expires = c.now + options_.token_validity;
  IssuanceGuard guard;
  guard.now = c.now;
  switch (ent->model) {
    case Model::kSubscription:
      if (c.now < ent->window_start || c.now >= ent->window_end) {
        fail(403, "outside_window", "the subscription is not active now");
      }
      expires = std::min(expires, ent->window_end);
      guard.max_outstanding = ent->max_outstanding;
      break;
    case Model::kPayPerUse:
      guard.reserve_from_balance = true;
      guard.max_outstanding = ent->max_outstanding;
      break;
    case Model::kRentToOwn:
      expires = c.now + (ent->paid >= ent->price ? options_.rent_paid_validity
                                                 : options_.rent_unpaid_validity);
      guard.max_outstanding = ent->max_outstanding;
      break;
  }
  expires = std::min<UnixTime>(expires, auth.not_after());

  // Sign first, record second, answer last: a token exists outside only after
  // its issuance (and reservation) is durable; a failed commit discards it.
  std::vector<IssuanceRecord> records;
  std::vector<Bytes> signed_tokens;
  for (std::uint32_t i = 0; i < count; ++i) {
    IssuanceRecord r;
    r.token_id = new_token_id();
    r.user_id = c.user->id;
    r.device_id = device_id;
    r.user_key_id = key->key_id;
    r.uses = uses;
    r.issued_at = c.now;
    r.expires_at = expires;
    r.authorization_id = auth.id();
    v1::DeviceToken t;
    t.set_token_id(str(r.token_id));
    t.set_issued_at(r.issued_at);
    t.set_device_id(str(device_id));
    t.set_authorized_uses(uses);
    t.set_user_id(str(c.user->id));
    t.set_user_public_key(str(key->public_key));
    t.set_expires_at(expires);
    t.set_authorization_id(auth.id());
    const std::string body = t.SerializeAsString();
    auto s = sign_object(v1::Signed::TYPE_DEVICE_TOKEN, as_bytes(body), cloud_key_);
    if (!s) fail(500, "internal", "the cloud key could not sign");
    const std::string bytes = s->SerializeAsString();
    signed_tokens.emplace_back(bytes.begin(), bytes.end());
    records.push_back(std::move(r));
  }
  switch (store_.record_issuances(records, guard)) {
    case IssueOutcome::kRecorded:
      break;
    case IssueOutcome::kNoEntitlement:
      fail(403, "not_entitled", "you hold no entitlement for this device");
    case IssueOutcome::kOutstandingCap:
      fail(409, "outstanding_cap",
           "at most " + std::to_string(ent->max_outstanding) +
               " unexpired tokens may be outstanding for this device");
    case IssueOutcome::kInsufficientBalance:
      fail(
          402, "insufficient_balance",
          "the prepaid balance does not cover " + std::to_string(uint64_t{uses} * count) + " uses");
  }
  // The answer is built in one arena (a stack buffer, the heap beyond it).
  unsigned char arena[8192];
  json::monotonic_resource mr(arena, sizeof arena);
  const json::storage_ptr sp(&mr);
  json::array tokens(sp);
  tokens.reserve(records.size());
  for (std::size_t i = 0; i < records.size(); ++i) {
    tokens.push_back(token_json(records[i], signed_tokens[i], sp));
  }
  json::object answer(sp);
  answer.reserve(2);
  answer.emplace("authorization_id", auth.id());
  answer.emplace("tokens", std::move(tokens));
  return json_response(200, answer);
}

ApiResponse Authority::get_authorization(const Context&) {
  auto bytes = store_.authorization();
  if (!bytes) fail(404, "no_authorization", "no cloud key authorization has been set");
  auto parsed = parse_signed(*bytes);
  v1::CloudKeyAuthorization auth;
  if (!parsed || !auth.ParseFromString(parsed->body())) {
    fail(503, "no_authorization", "the stored authorization is unreadable");
  }
  return json_response(200, json::object{{"authorization", base64_encode(*bytes)},
                                         {"id", auth.id()},
                                         {"not_before", auth.not_before()},
                                         {"not_after", auth.not_after()}});
}

ApiResponse Authority::get_device(const Context& c, const std::string& id_text) {
  auto id = uuid_from_string(id_text);
  if (!id) fail(400, "bad_field", "the device id is not a UUID (8-4-4-4-12)");
  if (!store_.entitlement(c.user->id, *id)) {
    fail(403, "not_entitled", "you hold no entitlement for this device");
  }
  auto d = store_.device(*id);
  if (!d) fail(403, "not_entitled", "you hold no entitlement for this device");
  auto key = crypto::PublicKey::from_spki_der(d->public_key);
  if (!key) fail(503, "storage_unavailable", "the stored device key is unreadable");
  return json_response(200, json::object{{"device_id", uuid_to_string(d->id)},
                                         {"public_key", key->pem()},
                                         {"key_id", to_hex(key->id())},
                                         {"name", d->name}});
}

ApiResponse Authority::receipts(const Context& c) {
  Body b(c.body, {"export"});
  const Bytes raw = b.base64("export", kMaxSignedObjectSize);
  auto env = parse_signed(raw);
  if (!env) {
    fail(400, "malformed_export",
         "export is not a Signed object (" + std::string(error_name(env.error())) + ")");
  }
  auto device = store_.device_by_key_id(as_bytes(env->signer_key_id()));
  if (!device) fail(422, "unknown_signer", "the export is not signed by a registered device");
  auto key = crypto::PublicKey::from_spki_der(device->public_key);
  if (!key) fail(503, "storage_unavailable", "the stored device key is unreadable");
  auto ex = verify_and_parse<v1::AuditExport>(*env, v1::Signed::TYPE_AUDIT_EXPORT, *key,
                                              AlgorithmPolicy{});
  if (!ex) {
    fail(422, "bad_signature",
         "the export does not verify under the device key (" + std::string(error_name(ex.error())) +
             ")");
  }
  if (ex->device_id() != str(device->id)) {
    fail(422, "wrong_device", "the export names another device than its signer");
  }

  const ReceiptHead head = store_.receipt_head(device->id);
  std::vector<v1::AuditRecord> fresh;
  for (const auto& r : ex->records()) {
    if (r.seq() < head.seq) continue;
    if (r.seq() == head.seq) {
      if (str(head.hash) != r.hash()) {
        fail(409, "chain_mismatch", "the export contradicts receipts reconciled earlier");
      }
      continue;
    }
    fresh.push_back(r);
  }
  instrument::AuditHead start;
  start.seq = head.seq;
  std::copy_n(head.hash.begin(), std::min(head.hash.size(), start.hash.size()), start.hash.begin());
  std::uint64_t reconciled = 0;
  if (!fresh.empty()) {
    if (fresh.front().seq() != head.seq + 1) {
      fail(409, "chain_gap",
           "the export starts at record " + std::to_string(fresh.front().seq()) +
               "; upload from record " + std::to_string(head.seq + 1));
    }
    std::string why;
    auto end = instrument::verify_audit_run(fresh, start, &why);
    if (!end) fail(422, "chain_broken", "the export's hash chain is broken: " + why);
    std::vector<ReceiptCharge> charges;
    for (const auto& r : fresh) {
      if (r.kind() == v1::AuditRecord::KIND_COMMAND && r.accepted() && r.uses_charged() > 0) {
        Bytes token(r.token_id().begin(), r.token_id().end());
        // Only uses of this cloud's own issuances for this device are on its books
        // (the device also reports tokens minted elsewhere, e.g. by hand).
        if (auto issued = store_.issuance(token); issued && issued->device_id == device->id) {
          reconciled += r.uses_charged();
        }
        charges.push_back({std::move(token), r.uses_charged()});
      }
    }
    ReceiptHead next{end->seq, Bytes(end->hash.begin(), end->hash.end())};
    if (store_.apply_receipt(device->id, head, next, charges) == ReceiptOutcome::kHeadMoved) {
      fail(409, "chain_race", "another upload for this device landed first; retry");
    }
  }
  const std::uint64_t next_seq = fresh.empty() ? head.seq + 1 : fresh.back().seq() + 1;
  return json_response(200, json::object{{"device_id", uuid_to_string(device->id)},
                                         {"records_applied", fresh.size()},
                                         {"uses_reconciled", reconciled},
                                         {"next_seq", next_seq}});
}

}  // namespace tollgate::cloud
