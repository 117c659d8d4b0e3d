#!/usr/bin/env bash
# The GPU suite: every GPU measurement in one command, offline, within a time budget (default 480 s with the
# install; smoke: at most 300 s, ~2.5 min on 2 idle cores), written to OUT_DIR as gpu.md + gpu.json + logs (7 files,
# flat). Each section runs under its own `timeout`; a section that fails, hangs or is skipped is marked in gpu.md
# with its log's tail, and the others go on.
#
#   bash scripts/bench/gpu_suite.sh OUT_DIR [--wheels DIR] [--data DIR] [--smoke] [--minutes M] [--work DIR]
#                                           [--budget SECONDS]
#
#   --wheels DIR  install the wheels there first (pip --no-index --no-deps --target WORK/site; on PYTHONPATH),
#                 for a machine that has torch/transformers/accelerate but not wandb/omegaconf/datasets
#                 (scripts/bench/gpu_prepare.sh makes .gpu/wheels); lmbench itself: pip install --no-deps -e .,
#                 and the checkout on PYTHONPATH in any case
#   --data DIR    folder with tinystories/, tinyshakespeare/, wikitext-2/ (default ../shared/data)
#   --smoke       the same sections on the CPU at toy sizes (CI runs this so that the suite cannot rot)
#   --minutes M   training time of the TinyStories recipe (default 2; smoke 0.5), shortened if the budget runs low
#   --work DIR    caches, checkpoints, token caches (default /tmp/lmbench-gpu-work; emptied first)
#
# Sections, in order: install, pytest -m gpu, peaks, train (transformers), generation bf16, generation fp32,
# recipe, lstm; then gpu_report.py. Exit code 0 when every section finished, 1 otherwise.
set -uo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BENCH="$REPO/scripts/bench"
COMMAND="bash scripts/bench/gpu_suite.sh$(printf ' %q' "$@")"

usage() { sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 2; }
OUT="" WHEELS="" DATA="$REPO/../shared/data" SMOKE=0 MINUTES="" WORK="/tmp/lmbench-gpu-work" BUDGET=""
while (($#)); do
  case "$1" in
    --wheels) WHEELS="$2"; shift 2 ;;
    --data) DATA="$2"; shift 2 ;;
    --smoke) SMOKE=1; shift ;;
    --minutes) MINUTES="$2"; shift 2 ;;
    --work) WORK="$2"; shift 2 ;;
    --budget) BUDGET="$2"; shift 2 ;;
    -h|--help) usage ;;
    -*) echo "gpu_suite: unknown option $1" >&2; usage ;;
    *) [[ -z "$OUT" ]] || { echo "gpu_suite: one OUT_DIR only" >&2; usage; }; OUT="$1"; shift ;;
  esac
done
[[ -n "$OUT" ]] || usage
PY="${PYTHON:-python3}"
START=$(date +%s)
if ((SMOKE)); then
  MINUTES="${MINUTES:-0.5}" BUDGET="${BUDGET:-300}"
else
  MINUTES="${MINUTES:-2}" BUDGET="${BUDGET:-480}"
fi
DEADLINE=$((START + BUDGET))
RESERVE=15  # seconds kept for the report

mkdir -p "$OUT" || exit 2
OUT="$(cd "$OUT" && pwd)"
rm -f "$OUT"/{gpu.md,gpu.json,suite.log,pytest.log,train.log,gen.log,recipe.log}
rm -rf "$WORK" && mkdir -p "$WORK" || exit 2
WORK="$(cd "$WORK" && pwd)"
DATA="$(cd "$DATA" 2>/dev/null && pwd || echo "$DATA")"
LOG="$OUT/suite.log"
STATUS="$WORK/status.tsv"
: > "$STATUS"
note() { echo "[$(date +%H:%M:%S) +$(($(date +%s) - START))s] $*" | tee -a "$LOG"; }
left() { echo $((DEADLINE - RESERVE - $(date +%s))); }  # seconds of the budget left for sections
cd "$REPO" || exit 2

# ------------------------------------------------------------------------------------------ environment
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled WANDB_SILENT=true HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 \
  TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false TQDM_MININTERVAL=10 LMBENCH_DATA="$DATA" \
  TORCHINDUCTOR_CACHE_DIR="$WORK/inductor" PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"  # lmbench from this checkout, installed or not
if ((SMOKE)); then
  export CUDA_VISIBLE_DEVICES=""  # the CPU, even on a GPU machine
  # toy data: the first lines of each file (the suite reads only what it is given)
  SMOKE_DATA="$WORK/smoke-data"
  mkdir -p "$SMOKE_DATA"/{tinystories,tinyshakespeare,wikitext-2}
  head -n 2000 "$DATA/tinystories/tinystories_10k.txt" > "$SMOKE_DATA/tinystories/tinystories_10k.txt"
  head -n 150 "$DATA/tinystories/tinystories_val.txt" > "$SMOKE_DATA/tinystories/tinystories_val.txt"
  head -n 4000 "$DATA/tinyshakespeare/input.txt" > "$SMOKE_DATA/tinyshakespeare/input.txt"
  for f in train valid test; do head -n 1500 "$DATA/wikitext-2/$f.txt" > "$SMOKE_DATA/wikitext-2/$f.txt"; done
  DATA="$SMOKE_DATA"
  export LMBENCH_DATA="$DATA"
fi
note "gpu suite: $COMMAND"
note "repo $REPO, data $DATA, work $WORK, out $OUT, budget ${BUDGET}s, recipe ${MINUTES} min, smoke=$SMOKE"
for d in tinystories tinyshakespeare wikitext-2; do [[ -d "$DATA/$d" ]] || note "WARNING: $DATA/$d is missing"; done

# run_section NAME CAP LOGFILE CMD...: CMD under `timeout` (at most CAP seconds, less when the budget runs low),
# its output appended to OUT/LOGFILE; one line per section in WORK/status.tsv (name, exit code, seconds, cap, log).
run_section() {
  local name="$1" cap="$2" log="$3"; shift 3
  local left
  left=$(left)
  ((cap > left)) && cap=$left
  if ((cap < 10)); then
    note "skip $name: ${left}s left of the budget"
    printf '%s\tskipped\t0\t0\t%s\n' "$name" "$log" >> "$STATUS"
    echo "=== $name: skipped, ${left}s left of the budget" >> "$OUT/$log"
    return 0
  fi
  note "start $name (cap ${cap}s, log $log)"
  echo "=== $name: $* (cap ${cap}s, $(date))" >> "$OUT/$log"
  local t0 rc
  t0=$(date +%s)
  timeout --kill-after=10 "$cap" "$@" >> "$OUT/$log" 2>&1
  rc=$?
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$rc" "$(($(date +%s) - t0))" "$cap" "$log" >> "$STATUS"
  note "end $name: exit $rc after $(($(date +%s) - t0))s"
}

# ------------------------------------------------------------------------------------------ install
install() {
  if [[ -n "$WHEELS" ]]; then
    local site="$WORK/site" w
    local pip=("$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site")
    echo "installing $(ls "$WHEELS"/*.whl | wc -l) wheels from $WHEELS into $site"
    if ! "${pip[@]}" "$WHEELS"/*.whl; then
      echo "WARNING: installing them together failed; one at a time (a wheel for another Python is left out)"
      for w in "$WHEELS"/*.whl; do "${pip[@]}" --upgrade "$w" || echo "WARNING: not installed: $(basename "$w")"; done
    fi
    echo "lmbench: pip install --no-deps --no-build-isolation --no-index -e $REPO"
    "$PY" -m pip install -q --no-deps --no-build-isolation --no-index -e "$REPO" \
      || echo "WARNING: pip install -e failed; lmbench is imported from the checkout on PYTHONPATH"
  fi
  command -v nvidia-smi >/dev/null && nvidia-smi || true
  PYTHONPATH="$REPO/scripts/bench:$PYTHONPATH" "$PY" - <<'EOF' || return 1
import importlib, importlib.metadata as m, json, os, sys
names = ["torch", "transformers", "accelerate", "tokenizers", "sentencepiece", "safetensors", "numpy", "pandas",
         "pyarrow", "huggingface_hub", "omegaconf", "datasets", "wandb", "razdel", "xxhash", "pytest", "pytest-timeout",
         "pytest-xdist", "lmbench"]
for name in names:
    try:
        print(f"{name:16s} {m.version(name)}")
    except m.PackageNotFoundError:
        print(f"{name:16s} MISSING")
for name in ("omegaconf", "wandb", "datasets", "razdel"):  # importable, not only installed
    try:
        importlib.import_module(name)
        print(f"import {name}: ok")
    except Exception as exc:
        print(f"import {name}: FAILED ({type(exc).__name__}: {exc})")
import torch
print("python", sys.version.split()[0], "| torch CUDA", torch.version.cuda, "| CUDA available",
      torch.cuda.is_available())
import lmbench, lmbench.cli, lmbench.spec, lmbench.training.runner  # the suite needs these before anything else
print("lmbench imported from", os.path.dirname(lmbench.__file__))
from common import environment
json.dump(environment(), open(os.path.join(os.environ["SUITE_WORK"], "env.json"), "w"), indent=2)
EOF
  "$PY" -m lmbench --help > /dev/null || return 1
  echo "python -m lmbench works"
}
if [[ -n "$WHEELS" ]]; then
  WHEELS="$(cd "$WHEELS" && pwd)"
  export PYTHONPATH="$WORK/site:$PYTHONPATH" PATH="$WORK/site/bin:$PATH"
fi
export SUITE_WORK="$WORK" WHEELS WORK PY REPO
export -f install
run_section install 120 suite.log bash -c install

# ------------------------------------------------------------------------------------------ sections
if ((SMOKE)); then
  CAP_PYTEST=120 CAP_PEAKS=30 CAP_TRAIN=150 TRAIN_BUDGET=120 CAP_GEN=60 CAP_LSTM=60 RECIPE_EXTRA=60
  GEN_ARGS=(--d-model 64 --num-layers 2 --vocab-size 512 --new-tokens 16 --repeats 1)
  SMOKE_FLAG=(--smoke)
  RECIPE_EVERY=10
else
  CAP_PYTEST=120 CAP_PEAKS=30 CAP_TRAIN=185 TRAIN_BUDGET=160 CAP_GEN=80 CAP_LSTM=40 RECIPE_EXTRA=45
  GEN_ARGS=(--new-tokens 128 --repeats 2)
  SMOKE_FLAG=()
  RECIPE_EVERY=400
fi

PYTEST_ARGS=(-m gpu -v -p no:cacheprovider --continue-on-collection-errors)
"$PY" -c "import pytest_timeout" 2>/dev/null && PYTEST_ARGS+=(--timeout=120)
((SMOKE)) || { "$PY" -c "import xdist" 2>/dev/null && PYTEST_ARGS+=(-n 8); }
run_section pytest "$CAP_PYTEST" pytest.log "$PY" -m pytest "${PYTEST_ARGS[@]}"

run_section peaks "$CAP_PEAKS" train.log "$PY" "$BENCH/gpu_peaks.py" --out "$WORK/peaks.json" "${SMOKE_FLAG[@]}"

LEFT=$(($(left) - 25))
((TRAIN_BUDGET > LEFT)) && TRAIN_BUDGET=$LEFT
run_section train "$CAP_TRAIN" train.log "$PY" "$BENCH/gpu_train.py" transformers --out "$WORK/train.json" \
  --peaks "$WORK/peaks.json" --data "$DATA" --work "$WORK/train" --budget "$TRAIN_BUDGET" "${SMOKE_FLAG[@]}"

for dtype in bf16 fp32; do
  run_section "generation-$dtype" "$CAP_GEN" gen.log "$PY" "$BENCH/generation.py" --dtype "$dtype" \
    --impls lmbench transformers --batch-sizes 1 16 "${GEN_ARGS[@]}" --out "$WORK/gen-$dtype"
done

# the recipe gets the rest of the budget (less ~25 s for the LSTM pair, last), up to --minutes of training
LEFT=$(($(left) - RECIPE_EXTRA - 25))
SECONDS_WANTED=$("$PY" -c "print(int(float('$MINUTES') * 60))")
RECIPE_S=$((SECONDS_WANTED < LEFT ? SECONDS_WANTED : LEFT))
((RECIPE_S < 10)) && RECIPE_S=10
((RECIPE_S < SECONDS_WANTED)) && note "recipe shortened to ${RECIPE_S}s of training (budget)"
run_section recipe $((RECIPE_S + RECIPE_EXTRA)) recipe.log "$PY" "$BENCH/gpu_recipe.py" --out "$WORK/recipe.json" \
  --data "$DATA" --work "$WORK/recipe" --seconds "$RECIPE_S" --eval-every "$RECIPE_EVERY" "${SMOKE_FLAG[@]}"

run_section lstm "$CAP_LSTM" train.log "$PY" "$BENCH/gpu_train.py" lstm --out "$WORK/lstm.json" \
  --peaks "$WORK/peaks.json" --data "$DATA" --work "$WORK/lstm" "${SMOKE_FLAG[@]}"

# ------------------------------------------------------------------------------------------ report
for f in "$OUT"/*.log; do  # logs stay readable and small: at most the first 500 and the last 3000 lines
  if (($(wc -l < "$f") > 4000)); then
    { head -n 500 "$f"; echo "... ($(wc -l < "$f") lines; middle cut) ..."; tail -n 3000 "$f"; } > "$f.cut" \
      && mv "$f.cut" "$f"
  fi
done
WALL=$(($(date +%s) - START))
note "report (suite wall time ${WALL}s)"
if ! timeout 40 "$PY" "$BENCH/gpu_report.py" --work "$WORK" --out "$OUT" --command "$COMMAND" --wall-s "$WALL" \
    $( ((SMOKE)) && echo --smoke ) 2>> "$LOG"; then
  note "gpu_report.py failed: writing a minimal gpu.md"
  {
    echo "# lmbench GPU suite (report script failed; see suite.log)"; echo; echo "Command: \`$COMMAND\`"; echo
    echo "| section | exit code | seconds | cap | log |"; echo "|---|---|---|---|---|"
    awk -F'\t' '{printf "| %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5}' "$STATUS"
    for f in "$WORK"/*.json; do echo; echo "## $(basename "$f")"; echo '```'; head -c 20000 "$f"; echo '```'; done
  } > "$OUT/gpu.md"
fi
cp "$STATUS" "$WORK/status.final.tsv" 2>/dev/null
note "done in $(($(date +%s) - START))s; files: $(cd "$OUT" && ls | tr '\n' ' ')"
awk -F'\t' '$2 != "0" {bad = 1} END {exit bad}' "$STATUS"
