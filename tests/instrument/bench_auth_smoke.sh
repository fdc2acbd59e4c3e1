#!/bin/bash
# `tools/bench auth` runs end to end (a smoke run: tiny rounds, the ratios are
# NOT asserted - they are only meaningful from a full run, see docs/BENCHMARKS.md):
# the table has a memory row, a one-host durable row and a group-commit durable
# row (8 hosts by default) per algorithm, --json one object per row with the
# fields docs/BENCHMARKS.md names, and the scratch databases are gone.
set -u
BIN=${TOLLGATE_BIN_DIR:?}/tollgate-bench
SRC=${TOLLGATE_SOURCE_DIR:?}
[ -x "$BIN" ] || { echo "SKIP: $BIN not built"; exit 0; }
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*"; cat "$T/out" "$T/err" 2>/dev/null; exit 1; }

build_dir=$(dirname "$TOLLGATE_BIN_DIR")
bash "$SRC/tools/bench" auth --build-dir "$build_dir" --rounds 1 --quick --db-dir "$T" \
  >"$T/out" 2>"$T/err" || fail "tools/bench auth exited $?"
for alg in Ed25519 P-256 RSA-2048; do
  for row in "memory +$alg +-" "durable +$alg +1" "durable +$alg +8"; do
    grep -Eq "^$row +[0-9]+ +[0-9]+ +[0-9.]+ " "$T/out" || fail "no row '$row'"
  done
done

"$BIN" auth --rounds 1 --quick --algs ed25519 --db-dir "$T" --json >"$T/out" 2>"$T/err" ||
  fail "tollgate-bench auth --json exited $?"
[ "$(wc -l <"$T/out")" -eq 3 ] || fail "want 3 JSON rows (memory, durable 1 host, durable 8 hosts)"
python3 - "$T/out" <<'PY' || fail "JSON rows lack fields"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert [r["kind"] for r in rows] == ["memory", "durable", "durable"]
assert [r.get("hosts") for r in rows] == [None, 1, 8]
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
