#include "gateway/storage.hpp"

#include <algorithm>

namespace tollgate {
namespace {

// A put cancels an earlier removal of the same key and vice versa, so a folded
// delta never holds a key on both sides.
template <class Map, class Set, class Key, class Value>
void put(Map& puts, Set& removals, const Key& key, Value value) {
  removals.erase(key);
  puts.insert_or_assign(key, std::move(value));
}

template <class Map, class Set, class Key>
void remove(Map& puts, Set& removals, const Key& key) {
  puts.erase(key);
  removals.insert(key);
}

template <class Map, class Set>
void apply_table(Map& table, const Map& puts, const Set& removals) {
  for (const auto& [k, v] : puts) table.insert_or_assign(k, v);
  for (const auto& k : removals) table.erase(k);
}

}  // namespace

bool StateDelta::changes_state() const {
  return !authorizations_put.empty() || !authorizations_removed.empty() || !revoked_added.empty() ||
         !tokens_put.empty() || !tokens_removed.empty() || !tombstones_put.empty() ||
         !tombstones_removed.empty() || time_floor.has_value() || !nonces_put.empty() ||
         !nonces_removed.empty() || !idempotency_put.empty() || !idempotency_removed.empty() ||
         next_sequence.has_value();
}

void StateDelta::put_authorization(std::uint64_t id, Bytes signed_bytes) {
  put(authorizations_put, authorizations_removed, id, std::move(signed_bytes));
}
void StateDelta::remove_authorization(std::uint64_t id) {
  remove(authorizations_put, authorizations_removed, id);
}
void StateDelta::put_token(const Bytes& id, StoredToken token) {
  put(tokens_put, tokens_removed, id, std::move(token));
}
void StateDelta::remove_token(const Bytes& id) {
  remove(tokens_put, tokens_removed, id);
}
void StateDelta::put_tombstone(const Bytes& id, UnixTime expires_at) {
  put(tombstones_put, tombstones_removed, id, expires_at);
}
void StateDelta::remove_tombstone(const Bytes& id) {
  remove(tombstones_put, tombstones_removed, id);
}
void StateDelta::put_nonce(const Bytes& nonce, NonceRecord record) {
  put(nonces_put, nonces_removed, nonce, record);
}
void StateDelta::remove_nonce(const Bytes& nonce) {
  remove(nonces_put, nonces_removed, nonce);
}
void StateDelta::put_idempotency(const RequestKey& key, IdempotencyRecord record) {
  put(idempotency_put, idempotency_removed, key, std::move(record));
}
void StateDelta::remove_idempotency(const RequestKey& key) {
  remove(idempotency_put, idempotency_removed, key);
}
void StateDelta::raise_floor(UnixTime t) {
  if (!time_floor || *time_floor < t) time_floor = t;
}

void StateDelta::then(const StateDelta& later) {
  for (const auto& [k, v] : later.authorizations_put) put_authorization(k, v);
  for (auto k : later.authorizations_removed) remove_authorization(k);
  revoked_added.insert(later.revoked_added.begin(), later.revoked_added.end());
  for (const auto& [k, v] : later.tokens_put) put_token(k, v);
  for (const auto& k : later.tokens_removed) remove_token(k);
  for (const auto& [k, v] : later.tombstones_put) put_tombstone(k, v);
  for (const auto& k : later.tombstones_removed) remove_tombstone(k);
  if (later.time_floor) raise_floor(*later.time_floor);
  for (const auto& [k, v] : later.nonces_put) put_nonce(k, v);
  for (const auto& k : later.nonces_removed) remove_nonce(k);
  for (const auto& [k, v] : later.idempotency_put) put_idempotency(k, v);
  for (const auto& k : later.idempotency_removed) remove_idempotency(k);
  if (later.next_sequence) {
    next_sequence = std::max(next_sequence.value_or(0), *later.next_sequence);
  }
  audit.insert(audit.end(), later.audit.begin(), later.audit.end());
}

void apply(DeviceState& state, const StateDelta& delta) {
  apply_table(state.authorizations, delta.authorizations_put, delta.authorizations_removed);
  state.revoked_ids.insert(delta.revoked_added.begin(), delta.revoked_added.end());
  apply_table(state.tokens, delta.tokens_put, delta.tokens_removed);
  apply_table(state.tombstones, delta.tombstones_put, delta.tombstones_removed);
  if (delta.time_floor) state.time_floor = std::max(state.time_floor, *delta.time_floor);
  apply_table(state.nonces, delta.nonces_put, delta.nonces_removed);
  apply_table(state.idempotency, delta.idempotency_put, delta.idempotency_removed);
  if (delta.next_sequence) {
    state.next_sequence = std::max(state.next_sequence, *delta.next_sequence);
  }
}

}  // namespace tollgate
