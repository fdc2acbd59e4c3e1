// CloudStore on one SQLite file: WAL journal, synchronous=FULL (a committed
// issuance survives a power cut), every method one BEGIN IMMEDIATE transaction.
// One connection serialised by a mutex: SQLite has a single writer anyway, and
// the server signs tokens outside the lock. Concurrent record_issuances calls
// are group-committed: one transaction and one fsync for all of them.
// Lookups go through a few read-only WAL connections. Every connection keeps
// its statements prepared (parsing SQL cost more than executing it).
//
// change_version() is a counter that triggers in the database file itself
// raise on every change to users, keys, devices, entitlement terms, the
// authorization and on ended sessions, so it also counts changes made by
// other processes (the operator CLI, a second server) or by hand.
#pragma once

#include <atomic>
#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tools/cloud/issuance_batcher.hpp"
#include "tools/cloud/store.hpp"

struct sqlite3;
struct sqlite3_stmt;

namespace tollgate::cloud {

class SqliteCloudStore final : public CloudStore {
 public:
  static constexpr int kSchemaVersion = 1;

  // Opens (creating if needed) the database at `path`; throws StoreError when
  // it cannot, or when the file has a newer schema than this build knows.
  explicit SqliteCloudStore(const std::string& path);
  ~SqliteCloudStore() override;
  SqliteCloudStore(const SqliteCloudStore&) = delete;
  SqliteCloudStore& operator=(const SqliteCloudStore&) = delete;

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

 private:
  class Tx;
  class Stmt;
  class Reader;
  // A connection and its prepared statements (keyed by SQL text), used by one
  // thread at a time.
  struct Conn {
    sqlite3* db = nullptr;
    struct Hash {
      using is_transparent = void;  // look up by const char* without a std::string
      std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
    };
    std::unordered_map<std::string, sqlite3_stmt*, Hash, std::equal_to<>> statements;
    operator sqlite3*() const { return db; }
    void close();
    ~Conn() { close(); }
  };
  struct ReadConnection {
    std::mutex mu;
    Conn db;
  };
  static constexpr int kReaders = 4;
  void exec(const char* sql);
  IssueOutcome apply_issuance(const std::vector<IssuanceRecord>& tokens,
                              const IssuanceGuard& guard);

  std::mutex mu_;  // the connection; held for a whole transaction
  Conn db_;
  std::vector<std::unique_ptr<ReadConnection>> readers_;  // WAL readers
  std::atomic<unsigned> next_reader_{0};
  IssuanceBatcher batcher_;  // group commit of record_issuances
};

// Opens the store named by a --db value: "sqlite:PATH" (or a bare path).
// "postgresql://..." or "postgres://..." opens a PgCloudStore (tools/cloud/pg_store.hpp).
std::unique_ptr<CloudStore> open_store(const std::string& db);

}  // namespace tollgate::cloud
