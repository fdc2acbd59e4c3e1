#!/usr/bin/env bash
# tools/pg: start prints a URL that reaches a running server, repeated start
# and stop are harmless, and stop removes the directory. Skips (passes) when
# no PostgreSQL server binaries are installed.
set -euo pipefail

SRC=${TOLLGATE_SOURCE_DIR:?}
PG=$SRC/tools/pg
fail() { echo "FAIL: $*" >&2; exit 1; }
if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 && [[ -z ${TOLLGATE_PG_BINDIR:-} ]]; then
  echo "SKIP pg_tool: no PostgreSQL server installed (Debian package postgresql)"
  exit 0
fi
command -v psql >/dev/null || fail "psql is needed (Debian package postgresql-client)"
dir=$(mktemp -d /tmp/tg-pgtool-XXXXXX)
rmdir "$dir"
trap '"$PG" stop "$dir" >/dev/null 2>&1 || true' EXIT

url=$("$PG" start "$dir")
[[ $url == postgresql://* ]] || fail "start printed '$url'"
[[ $(psql -tAc 'SELECT 40 + 2' "$url") == 42 ]] || fail "the URL does not reach the server"
[[ $("$PG" start "$dir") == "$url" ]] || fail "a second start did not print the same URL"
[[ $("$PG" url "$dir") == "$url" ]] || fail "url"

other=$(mktemp -d /tmp/tg-pgtool-other-XXXXXX)
touch "$other/precious"
if "$PG" stop "$other" 2>/dev/null; then fail "stop removed a directory it did not create"; fi
[[ -e $other/precious ]] || fail "stop touched a foreign directory"
rm -rf "$other"

"$PG" stop "$dir"
[[ ! -e $dir ]] || fail "stop left $dir"
"$PG" stop "$dir" || fail "a second stop failed"
if psql -tAc 'SELECT 1' "$url" >/dev/null 2>&1; then fail "the server still answers after stop"; fi
echo "pg_tool: ok"
