# Shared by the tests/keys/*.sh acceptance tests (sourced, not run: CTest only
# picks up *.sh). Gives each test a scratch folder and small assertion helpers
# that print what they check.
set -Eeuo pipefail
trap 'echo "FAIL at ${BASH_SOURCE[0]##*/}:$LINENO: $BASH_COMMAND" >&2' ERR

: "${TOLLGATE_BIN_DIR:?run through ctest, or set TOLLGATE_BIN_DIR=build/<preset>/bin}"
KEYS="$TOLLGATE_BIN_DIR/tollgate-keys"
[ -x "$KEYS" ] || { echo "FAIL: $KEYS is not built" >&2; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/tollgate-keys-test.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"

ok() { echo "ok   $*"; }
fail() { echo "FAIL $*" >&2; exit 1; }

# run_capture CMD...: runs CMD with stdout in $WORK/out, stderr in $WORK/err; sets RC.
run_capture() {
  RC=0
  "$@" >"$WORK/out" 2>"$WORK/err" || RC=$?
}

# expect_ok WHAT CMD...: CMD must exit 0.
expect_ok() {
  local what=$1; shift
  run_capture "$@"
  [ "$RC" -eq 0 ] || fail "$what: exit $RC: $(cat "$WORK/err")"
  ok "$what"
}

# expect_one_line_error WHAT STATUS PATTERN CMD...: CMD must exit with STATUS and
# write exactly one line on stderr that matches the extended regex PATTERN.
expect_one_line_error() {
  local what=$1 status=$2 pattern=$3; shift 3
  run_capture "$@"
  [ "$RC" -eq "$status" ] || fail "$what: expected exit $status, got $RC (stderr: $(cat "$WORK/err"))"
  [ "$(wc -l <"$WORK/err")" -eq 1 ] || fail "$what: expected one line on stderr, got: $(cat "$WORK/err")"
  grep -Eq -- "$pattern" "$WORK/err" || fail "$what: stderr '$(cat "$WORK/err")' does not match /$pattern/"
  ok "$what -> $(cat "$WORK/err")"
}

# expect_rejected WHAT REASON CMD...: a `verify` that must fail (exit 1) with its
# LAST stderr line naming REASON (earlier lines are notes about refused installs).
expect_rejected() {
  local what=$1 reason=$2; shift 2
  run_capture "$@"
  [ "$RC" -eq 1 ] || fail "$what: expected exit 1 (invalid), got $RC: $(cat "$WORK/out" "$WORK/err")"
  local last
  last=$(tail -n 1 "$WORK/err")
  [[ "$last" == "tollgate-keys verify: invalid: $reason"* ]] ||
    fail "$what: expected reason '$reason', got '$last'"
  ok "$what -> $last"
}

iso_from_now() { date -u -d "$1" +%Y-%m-%dT%H:%M:%SZ; }
