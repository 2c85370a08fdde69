#!/usr/bin/env bash
# The GPU check (issue 11), one command from the repository root on a machine with one CUDA GPU, its
# own Python and torch, and no network; about 5 minutes on one H100. Prepare the wheels first, on a
# machine with a package index (bash scripts/gpu_wheels.sh), and carry wheels/ with the working tree.
#
#   bash scripts/gpu_check.sh                   # everything lands in $OUT (or results/gpu_check/)
#
# 1. installs the carried wheels into /tmp/site (Hydra, OmegaConf, submitit, ...; the project's own
#    wheel only to check that an installed copy finds its configs: the tree's src/ comes first on the path);
# 2. asks, in a process of its own, whether the data route records as a graph here (if not, the run
#    and the benchmark draw the data outside the graph: hardware.cuda_graph_data=false);
# 3. the tests marked cuda (tests/test_cuda.py): graphed against eager, exact resume, the NaN guard;
# 4. a short experiment=paper run with hardware.cuda_graph=true, which prints its steps/s;
# 5. the same run in hardware.precision=bf16-mixed (issue 20), which prints its steps/s and MSE;
# 6. the benchmark (--quick): eager, compiled and graphed steps of each strategy at batch 256 and 2048
#    and the sampler, each also in bf16-mixed with its ratio to fp32, written to results/bench/gpu.txt
#    and gpu.json (under $OUT too).
# Each stage has its own time limit; a stage that fails is reported and the next one still runs.
set -uo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
OUTDIR=${OUT:-$PWD/results/gpu_check}
SITE=/tmp/site
mkdir -p "$OUTDIR/results/bench"
if ! ls wheels/*.whl >/dev/null 2>&1; then
    echo "gpu_check: no wheels/*.whl here: run 'bash scripts/gpu_wheels.sh' where an index is reachable and carry wheels/" >&2
    exit 2
fi
if ! "$PY" -c 'import torch, sys; sys.exit(not torch.cuda.is_available())'; then
    echo "gpu_check: torch sees no CUDA GPU here ($("$PY" -c 'import torch; print(torch.__version__)'))" >&2
    exit 2
fi
"$PY" -m pip install -q --no-index --no-deps --target "$SITE" wheels/*.whl || exit 2
export PYTHONPATH="$PWD/src:$SITE"
export HYDRA_FULL_ERROR=1 COLUMNS=150
failed=()
stage() {  # stage NAME SECONDS COMMAND...: run it with a time limit, its output also in $OUTDIR/NAME.log
    local name=$1 limit=$2
    shift 2
    echo "=== $name (limit ${limit} s)"
    local start=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee "$OUTDIR/$name.log"
    local rc=${PIPESTATUS[0]}
    echo "=== $name: exit $rc after $((SECONDS - start)) s"
    last_rc=$rc
    [ "$rc" -eq 0 ] || failed+=("$name (exit $rc)")
}

{ nvidia-smi -L 2>/dev/null; "$PY" -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__,
  "cuda", torch.version.cuda, torch.cuda.get_device_name(0))'; git rev-parse --short HEAD 2>/dev/null; } \
    | tee "$OUTDIR/env.txt"

stage installed_configs 60 env PYTHONPATH="$SITE" "$PY" -c '
import ired_mining
from hydra import compose, initialize_config_module
assert ired_mining.__file__.startswith("/tmp/site"), ired_mining.__file__
with initialize_config_module("ired_mining.conf", version_base="1.3"):
    cfg = compose("config", overrides=["experiment=paper", "hardware=gpu", "hardware.cuda_graph=true"])
print("the installed wheel composes experiment=paper: n", cfg.dataset.n, "batch", cfg.train.batch_size)'

# Can this GPU record the data route? Asked in a process of its own (a failed capture leaves the
# generator unusable); if not, the run and the benchmark draw the data outside the graph.
if timeout 60 "$PY" -m ired_mining.graphed 2>&1 | tee "$OUTDIR/data_route_probe.log"; then
    DATA=true
else
    DATA=false
fi
echo "hardware.cuda_graph_data=$DATA" | tee -a "$OUTDIR/env.txt"

stage cuda_tests 120 "$PY" -m pytest -m cuda tests/test_cuda.py -q -rs -p no:cacheprovider

RUN="$OUTDIR/paper_run"
stage paper_run 120 "$PY" -m ired_mining.train experiment=paper hardware=gpu hardware.cuda_graph=true \
    "hardware.cuda_graph_data=$DATA" train.steps=3000 train.eval_every=0 checkpoint.every=3000 "hydra.run.dir=$RUN"
paper_rc=$last_rc
[ -f "$RUN/metrics.json" ] && "$PY" -c "
import json, sys
m = json.load(open(sys.argv[1]))
if m['status'] != 'finished':
    sys.exit(f\"paper run: {m['status']}: {m.get('error')}\")
print(f\"paper run (graphed, adversarial, batch 2048): {m['step']} steps in {m['train_seconds']:.1f} s of training, \"
      f\"{1 / m['seconds_per_step']:.0f} steps/s (seconds_per_step {m['seconds_per_step']:.6f}) on {m['env']['device_name']}\")
" "$RUN/metrics.json" 2>&1 | tee "$OUTDIR/paper_steps_per_s.txt"
rm -rf "$RUN/checkpoints"  # megabytes nobody needs back

RUN16="$OUTDIR/paper_run_bf16"
stage paper_run_bf16 120 "$PY" -m ired_mining.train experiment=paper hardware=gpu hardware.cuda_graph=true \
    "hardware.cuda_graph_data=$DATA" hardware.precision=bf16-mixed train.steps=3000 train.eval_every=0 \
    checkpoint.every=3000 "hydra.run.dir=$RUN16"
for run in "$RUN" "$RUN16"; do
    [ -f "$run/metrics.json" ] && "$PY" -c "
import json, sys
m = json.load(open(sys.argv[1]))
print(f\"{sys.argv[2]}: {m['status']}, {1 / m['seconds_per_step']:.0f} steps/s, in_dist/mse {m.get('in_dist/mse')}\")
" "$run/metrics.json" "$(basename "$run")" 2>&1 | tee -a "$OUTDIR/precision.txt"
done
rm -rf "$RUN16/checkpoints"

# If the graphed run failed, time the eager and compiled steps at least.
graphs=()
[ "$paper_rc" -eq 0 ] || graphs=(--no-graph)
stage bench 240 "$PY" scripts/bench.py --quick --device cuda "${graphs[@]}" \
    --json results/bench/gpu.json --txt results/bench/gpu.txt "hardware.cuda_graph_data=$DATA"
cp results/bench/gpu.json results/bench/gpu.txt "$OUTDIR/results/bench/" 2>/dev/null

if [ ${#failed[@]} -gt 0 ]; then
    echo "gpu_check: failed: ${failed[*]}"
    exit 1
fi
echo "gpu_check: all stages passed; results in $OUTDIR"
