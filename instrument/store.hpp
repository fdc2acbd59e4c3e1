// The instrument's durable state: one SQLite database (state.db) holding the
// gateway's DeviceState, the hash-chained audit log and the simulated assay
// results.
//
// Durability: WAL journal, synchronous=FULL, so a successful commit survives a
// power cut; every write is ONE transaction (BEGIN IMMEDIATE ... COMMIT), so a
// cut or a failure mid-way leaves the database exactly as it was before.
// Storage::commit(delta) writes the state rows AND the delta's audit events in
// that same transaction: a charge and its audit record land together or not at
// all (charge before execute).
//
// Audit chain (docs/PROTOCOL.md "Audit log"): records are numbered from 1;
// record.hash = SHA-256(prev_hash || record serialized with `hash` empty), the
// first record's prev_hash is 32 zero bytes (see instrument/audit.hpp).
//
// Two durability classes for the instrument's own writes (Durability below):
// kDurable fsyncs before returning; kLazy is atomic and ordered, survives a
// crash of the process (SIGKILL) but not necessarily a power cut, until the next
// durable write, which makes it durable too (the WAL is append-only: a power cut
// loses at most a suffix of lazy writes, never one from the middle). Gateway
// commits (charges) are always durable.
//
// Schema versions: the database carries its schema version; a database written
// by a newer firmware (a version this build does not know) is refused with
// ERROR_UNSUPPORTED_VERSION rather than misread. (Version 1 is the first
// schema; a later build migrates older databases in open().)
//
// Not thread-safe: one SqliteStore per database, used from one thread (the
// instrument's io_context). Another process may read the same file (WAL) with a
// read-only store, e.g. `tollgate-instrument audit` while the instrument runs.
//
// Errors: every database failure is ERROR_STORAGE (nothing changed); the text
// of the last failure is in last_error() for logs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "gateway/bytes.hpp"
#include "gateway/result.hpp"
#include "gateway/storage.hpp"
#include "instrument/audit.hpp"

namespace tollgate::instrument {

enum class Durability {
  kDurable,  // on disk when the call returns
  kLazy,     // written now, made durable by the next durable write or sync()
};

// One result of the simulated `run-assay` command.
struct AssayResult {
  // 0 on input = the next free id (max + 1). A caller that writes lazily should
  // pass an id that was made durable before, e.g. the charge's idempotency
  // sequence (IdempotencyRecord::sequence): an id taken from max + 1 could be
  // handed out again after a power cut lost the lazy row. Use one scheme per
  // database.
  std::uint64_t id = 0;
  UnixTime created_at = 0;
  std::string protocol;
  std::string sample;
  std::string value;   // the simulated measurement
  Bytes token_id;      // the token charged for it
  Bytes request_hash;  // first 16 bytes of SHA-256 over the signed request
  bool operator==(const AssayResult&) const = default;
};

class SqliteStore final : public Storage {
 public:
  // The schema this build writes. Databases with a larger version are refused.
  static constexpr std::int64_t kSchemaVersion = 1;

  struct Options {
    bool read_only = false;  // opens an existing database without writing to it
    // synchronous=FULL (a commit is on disk when commit() returns). false gives
    // synchronous=NORMAL: still atomic, but the last commits may be lost in a
    // power cut. Only benchmarks and tests that need no durability use false.
    bool durable = true;
    int busy_timeout_ms = 5000;  // wait this long for another process's lock
  };

  // Opens (creating if absent, unless read_only) the database at `path`, sets
  // WAL, synchronous, foreign_keys and busy_timeout, creates or migrates the
  // schema and prepares every statement it will use.
  //   ERROR_UNSUPPORTED_VERSION  written by a newer schema (why says which)
  //   ERROR_STORAGE              cannot open, not a Tollgate database, I/O error
  // `why`, when given, receives a one-line explanation on failure.
  static Result<std::unique_ptr<SqliteStore>> open(const std::string& path, Options options,
                                                   std::string* why = nullptr);
  static Result<std::unique_ptr<SqliteStore>> open(const std::string& path) {
    return open(path, Options{});
  }

  ~SqliteStore() override;
  SqliteStore(const SqliteStore&) = delete;
  SqliteStore& operator=(const SqliteStore&) = delete;

  // --- Storage (the gateway's state) ---------------------------------------

  // The DeviceState as last committed (empty DeviceState on a new database).
  Result<DeviceState> load() override;
  // Applies `delta` and appends delta.audit as chained records, in one
  // transaction. On ERROR_STORAGE nothing was written (and the audit head is
  // unchanged). A delta that is empty() commits nothing and succeeds.
  Status commit(const StateDelta& delta) override;

  // --- Audit log ------------------------------------------------------------

  // Appends instrument-only records (KIND_BOOT, KIND_EXECUTION, KIND_RATE_LIMIT)
  // in their own transaction. The caller fills everything but seq, prev_hash and
  // hash, which the store assigns. Returns the new head.
  Result<AuditHead> append_audit(std::vector<v1::AuditRecord> records,
                                 Durability durability = Durability::kDurable);
  // Up to `max` records with seq >= from_seq, in order (fewer at the end of the
  // log; none when from_seq is past the head). from_seq 0 reads from the start.
  // Calls sync() first when lazy writes are pending, so no record leaves the
  // device that a power cut could still take back (its seq would be reused).
  Result<std::vector<v1::AuditRecord>> audit_records(std::uint64_t from_seq, std::size_t max);
  // The newest record's seq and hash ({0, zeros} for an empty log). Served from
  // memory: no database round trip. It is the head as of open() or this store's
  // own last write: a read-only store does not see later appends by the writer.
  AuditHead audit_head() const { return head_; }
  // Walks the whole log and checks every record against its neighbours and
  // against the head recorded beside it: detects an edited, deleted, inserted
  // or reordered record, and a truncated tail.
  //   ERROR_BAD_SIGNATURE  the chain is broken (why names the first bad seq)
  //   ERROR_MALFORMED      a record does not parse
  //   ERROR_STORAGE        cannot read
  Status verify_audit_chain(std::string* why = nullptr);

  // --- Simulated assay results ----------------------------------------------

  // Stores `result` and returns its id (result.id, or the next free id when 0;
  // ERROR_STORAGE if that id is taken). The optional `audit` records (e.g.
  // KIND_EXECUTION) are appended in the SAME transaction, so a result never
  // exists without its audit record.
  Result<std::uint64_t> put_result(const AssayResult& result,
                                   std::vector<v1::AuditRecord> audit = {},
                                   Durability durability = Durability::kDurable);
  // nullopt when no result has that id.
  Result<std::optional<AssayResult>> get_result(std::uint64_t id);
  Result<std::uint64_t> count_results();

  // --- Maintenance ----------------------------------------------------------

  // Makes every lazy write durable now (one fsync'd transaction); does nothing
  // when none is pending. Call it before shutdown and before anything leaves
  // the device that refers to lazily written rows.
  Status sync();
  bool lazy_writes_pending() const { return lazy_pending_; }

  // PRAGMA integrity_check; ERROR_STORAGE (why = SQLite's report) unless "ok".
  Status integrity_check(std::string* why = nullptr);
  // The value of a connection setting, for diagnostics and tests: one of
  // "synchronous" (2 = FULL), "foreign_keys", "busy_timeout", "application_id",
  // "wal_autocheckpoint"; ERROR_MALFORMED for any other name.
  Result<std::int64_t> query_pragma(const std::string& name);
  // The SQLite message of the last failure ("" if none yet).
  const std::string& last_error() const { return last_error_; }
  const std::string& path() const { return path_; }

  // --- Fault injection (tests) ----------------------------------------------

  // Makes the n-th write transaction from now (1 = the next one; commit,
  // append_audit and put_result all count) fail after all its rows were written
  // but before COMMIT, so it is rolled back: ERROR_STORAGE, nothing changed.
  // 0 disarms. Only that one transaction fails.
  void fail_write(std::size_t n) { fail_countdown_ = n; }
  // Makes every write transaction fail that way until told otherwise.
  void fail_all_writes(bool fail) { fail_all_ = fail; }
  // Successful write transactions since open.
  std::uint64_t writes() const { return writes_; }

 private:
  struct Db;
  SqliteStore(std::string path, std::unique_ptr<Db> db);

  // Runs `body` inside BEGIN IMMEDIATE ... COMMIT, chaining `audit` after it;
  // rolls back (and restores head_) on any failure.
  template <class Body>
  Status write_transaction(std::vector<v1::AuditRecord>& audit, Durability durability, Body&& body);
  Status append_chained(std::vector<v1::AuditRecord>& audit);
  Status fail(const char* what);

  std::string path_;
  std::unique_ptr<Db> db_;
  AuditHead head_;
  std::string last_error_;
  std::uint64_t writes_ = 0;
  std::size_t fail_countdown_ = 0;
  bool fail_all_ = false;
  bool lazy_pending_ = false;  // lazy writes committed since the last durable one
};

}  // namespace tollgate::instrument
