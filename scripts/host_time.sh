#!/bin/bash
# The host time of a fused Triton Lion step (launches stubbed, 290 tensors), this tree against
# an older commit, alternated ROUNDS times so both see the same machine load; prints each run
# and the lowest median of each side. The benchmark code is this tree's src/optforge/bench/host.py
# (it imports only what older trees also have), run against each tree's optimizer.
# Usage: scripts/host_time.sh COMMIT [ROUNDS]      (docs/benchmarks.md: COMMIT 0dfc618, 7 rounds)
set -euo pipefail
commit=${1:?the commit to compare against}; rounds=${2:-7}
here=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-$here/.venv/bin/python}
old=$(mktemp -d)
trap 'git -C "$here" worktree remove --force "$old" >/dev/null 2>&1 || true' EXIT
git -C "$here" worktree add -q --detach "$old" "$commit"
run() {  # $1: a tree; prints "median_plain median_cautious table_us"
  OMP_NUM_THREADS=1 PYTHONPATH="$1/src" "$py" - "$here/src/optforge/bench/host.py" <<'PY'
import importlib.util, sys
spec = importlib.util.spec_from_file_location("host_bench", sys.argv[1])
host = importlib.util.module_from_spec(spec); spec.loader.exec_module(host)
plain, cautious = (host.host_step_time(cautious=c) for c in (False, True))
print(f"{plain['median_us']:.0f} {cautious['median_us']:.0f} {plain['table_us']:.0f}")
PY
}
echo "run  tree    plain_us cautious_us table_us"
for i in $(seq "$rounds"); do
  echo "$i before $(run "$old")"; echo "$i after  $(run "$here")"
done | tee /dev/stderr | awk '
  $2 == "before" || $2 == "after" { for (k = 3; k <= 5; k++) if (!(($2, k) in low) || $k < low[$2, k]) low[$2, k] = $k }
  END { printf "lowest: before %s / %s / %s us, after %s / %s / %s us (plain / cautious / table)\n",
        low["before", 3], low["before", 4], low["before", 5], low["after", 3], low["after", 4], low["after", 5] }'
