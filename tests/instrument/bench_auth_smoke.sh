#!/bin/bash
# `tools/bench auth` runs end to end (a smoke run: tiny rounds, the ratios are
# NOT asserted - they are only meaningful from a full run, see docs/BENCHMARKS.md):
# the table has a memory and a durable row per algorithm, --json one object per
# row with the fields docs/BENCHMARKS.md names, and the scratch databases are gone.
set -u
BIN=${TOLLGATE_BIN_DIR:?}/tollgate-bench
SRC=${TOLLGATE_SOURCE_DIR:?}
[ -x "$BIN" ] || { echo "SKIP: $BIN not built"; exit 0; }
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*"; cat "$T/out" "$T/err" 2>/dev/null; exit 1; }

build_dir=$(dirname "$TOLLGATE_BIN_DIR")
bash "$SRC/tools/bench" auth --build-dir "$build_dir" --rounds 1 --quick --db-dir "$T" \
  >"$T/out" 2>"$T/err" || fail "tools/bench auth exited $?"
for kind in memory durable; do
  for alg in Ed25519 P-256 RSA-2048; do
    grep -Eq "^$kind +$alg +[0-9]+ +[0-9]+ +[0-9.]+ " "$T/out" || fail "no $kind $alg row"
  done
done

"$BIN" auth --rounds 1 --quick --algs ed25519 --db-dir "$T" --json >"$T/out" 2>"$T/err" ||
  fail "tollgate-bench auth --json exited $?"
[ "$(wc -l <"$T/out")" -eq 2 ] || fail "want 2 JSON rows (memory, durable)"
python3 - "$T/out" <<'PY' || fail "JSON rows lack fields"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert {r["kind"] for r in rows} == {"memory", "durable"}
for r in rows:
    for k in ("alg", "raw_per_s", "ours_per_s", "ratio", "target", "met", "rounds"):
        assert k in r, k
    assert r["alg"] == "ed25519" and r["raw_per_s"] > 0 and r["ours_per_s"] > 0
PY
for left in "$T"/tollgate-bench-auth.*; do
  [ -e "$left" ] && fail "scratch directory left behind: $left"
done

"$BIN" auth --rounds 0 >"$T/out" 2>"$T/err"; [ $? -eq 2 ] || fail "--rounds 0 is not a usage error"
echo "ok"
