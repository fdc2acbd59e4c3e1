// CloudStore on PostgreSQL through libpq, for deployments where several
// stateless server processes share one database.
//
// Every method is one transaction on a pooled connection (READ COMMITTED).
// Concurrent record_issuances calls of one process are group-committed, as on
// SQLite: one transaction (one WAL flush) for all requests queued while the
// previous batch committed, each under its own savepoint.
// Guarded updates lock the row that owns the invariant first (SELECT ... FOR
// UPDATE on the entitlement, the user or the device), so every guard reads the
// state the previous holder committed: concurrent minting can never overdraw a
// balance or exceed the outstanding cap, even across processes. A transaction
// aborted by a serialization failure or a deadlock (SQLSTATE 40001, 40P01) is
// retried from the start; other failures throw StoreError.
// Commits wait for the WAL flush (synchronous_commit as configured on the
// server, "on" by default), so an issuance is durable before a token leaves.
//
// The schema is created on first open (under an advisory lock, so processes
// opening an empty database together do not race) and carries a version;
// a database with a newer schema than this build is refused. Row triggers in
// the database keep change_version() (see store.hpp), whoever writes.
//
// Thread safety: safe to call from several threads; each call borrows one
// connection of the pool for the whole transaction.
#pragma once

#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "tools/cloud/issuance_batcher.hpp"
#include "tools/cloud/store.hpp"

struct pg_conn;

namespace tollgate::cloud {

class PgCloudStore final : public CloudStore {
 public:
  static constexpr int kSchemaVersion = 1;
  static constexpr std::size_t kDefaultPoolSize = 8;

  // Connects to `url` (a libpq URI "postgresql://..." or key=value string),
  // creating the schema if needed; throws StoreError when it cannot. At most
  // `pool_size` connections are opened, lazily beyond the first.
  explicit PgCloudStore(const std::string& url, std::size_t pool_size = kDefaultPoolSize);
  ~PgCloudStore() override;
  PgCloudStore(const PgCloudStore&) = delete;
  PgCloudStore& operator=(const PgCloudStore&) = delete;

  bool add_user(const UserRecord& user) override;
  std::optional<UserRecord> user_by_name(const std::string& name) override;
  std::optional<UserRecord> user_by_id(ByteView id) override;
  bool revoke_user(const std::string& name) override;

  void add_session(ByteView secret_hash, ByteView user_id, UnixTime expires_at,
                   UnixTime now) override;
  std::optional<SessionRecord> session(ByteView secret_hash) override;

  bool add_challenge(const ChallengeRecord& c, UnixTime now) override;
  std::optional<ChallengeRecord> challenge(ByteView id) override;
  bool consume_challenge_and_enroll(ByteView challenge_id, ByteView user_id,
                                    const UserKeyRecord& key) override;
  std::vector<UserKeyRecord> user_keys(ByteView user_id) override;

  bool add_device(const DeviceRecord& d) override;
  std::optional<DeviceRecord> device(ByteView id) override;
  std::optional<DeviceRecord> device_by_key_id(ByteView key_id) override;

  void put_entitlement(const EntitlementRecord& e) override;
  std::optional<EntitlementRecord> entitlement(ByteView user_id, ByteView device_id) override;
  bool credit_entitlement(ByteView user_id, ByteView device_id, std::uint64_t balance_delta,
                          std::uint64_t paid_delta) override;

  IssueOutcome record_issuances(const std::vector<IssuanceRecord>& tokens,
                                const IssuanceGuard& guard) override;
  std::optional<IssuanceRecord> issuance(ByteView token_id) override;

  void set_authorization(ByteView signed_bytes) override;
  std::optional<Bytes> authorization() override;

  ReceiptHead receipt_head(ByteView device_id) override;
  ReceiptOutcome apply_receipt(ByteView device_id, const ReceiptHead& expected,
                               const ReceiptHead& next,
                               const std::vector<ReceiptCharge>& charges) override;

  std::vector<UsageRow> usage() override;
  StoreCounts counts() override;

  std::optional<std::uint64_t> change_version() override;

  class Conn;  // one libpq connection (pg_store.cpp)

 private:
  class Lease;
  std::unique_ptr<Conn> connect();
  void commit_batch(std::vector<IssuanceBatcher::Pending*>& batch);

  std::string url_;
  std::size_t pool_size_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<Conn>> idle_;
  std::size_t open_ = 0;     // connections in existence (idle + leased)
  IssuanceBatcher batcher_;  // group commit of record_issuances
};

// Runs `sql` (one or more statements, no parameters) on a fresh connection to
// `url`; throws StoreError. For tooling and tests.
void pg_exec(const std::string& url, const std::string& sql);

// `url` (a libpq URI or key=value string) with the session's search_path set
// to `schema`: a PgCloudStore opened on it keeps all its tables there.
std::string pg_url_with_search_path(const std::string& url, const std::string& schema);

// A fresh, empty schema (tollgate_scratch_<random>) in the database at `url`,
// dropped with everything in it on destruction: tests and benchmarks get an
// isolated store on a shared server. Throws StoreError when it cannot create it.
class PgScratchSchema {
 public:
  explicit PgScratchSchema(std::string url);
  ~PgScratchSchema();
  PgScratchSchema(const PgScratchSchema&) = delete;
  PgScratchSchema& operator=(const PgScratchSchema&) = delete;
  const std::string& name() const { return name_; }
  // The URL to open a PgCloudStore in this schema.
  std::string url() const { return pg_url_with_search_path(base_url_, name_); }

 private:
  std::string base_url_;
  std::string name_;
};

}  // namespace tollgate::cloud
