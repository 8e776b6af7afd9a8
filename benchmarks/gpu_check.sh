#!/usr/bin/env bash
# The device check: what a GPU machine must show before users train on it, in at most 8 minutes on one GPU.
#
#   bash benchmarks/gpu_check.sh               # on a machine with a CUDA GPU; logs and JSON under $OUT or gpu_check_out/
#   bash benchmarks/gpu_check.sh --dry-run     # anywhere: list every step, its time limit and its command; run nothing
#   bash benchmarks/gpu_check.sh --fetch-wheels  # on a machine with pip and a network: the wheels a bare GPU image
#                                                # lacks (tensorboardX, torch-fidelity) into .whl/, for Python 3.12
#
# Steps, each under its own time limit (a step that fails or runs out of time is reported and the next one runs):
#   env       the GPU, torch, CUDA and TF32 state; wheels from .whl/ installed into a scratch folder if present
#   tests     the CUDA tests (pytest -m cuda: training, resume, every sampler, --eval, --compare, fp16, bf16,
#             channels-last, compile and CUDA graphs, DDP over NCCL)
#   cli       the CLI end to end on CUDA on the digits: train, resume, --test with langevin, pc, ode, heun,
#             euler_ancestral and inpainting, --eval (a TorchScript stand-in for the Inception network) and --compare
#   bench     benchmarks/bench.py on the MNIST and CIFAR-10 settings: training and sampling images/s for eager
#             float32 (TF32 off), TF32, the shipped defaults (bf16 where native, channels-last)
#   compile   the same on CIFAR-10 with torch.compile and CUDA graphs
#   export    the time of a 50,000-sample CIFAR-10 export (--eval, 10 x 100 Langevin steps), projected from the
#             Langevin step at batch 500, beside the same export at 20, 50 and 100 network evaluations per sample
#             (sampling.nfe): Euler ancestral, the fastest sampler at the paper's quality (docs/quality_cost.md)
# At the end a summary: each step's result and wall time, and where its log is.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

DRY=0
FETCH=0
OUTDIR="${OUT:-gpu_check_out}"
for arg in "$@"; do
    case "$arg" in
        --dry-run) DRY=1 ;;
        --fetch-wheels) FETCH=1 ;;
        --out=*) OUTDIR="${arg#--out=}" ;;
        -h|--help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "error: unknown option $arg (use --dry-run, --fetch-wheels, --out=DIR or --help)" >&2; exit 2 ;;
    esac
done
PY="${PYTHON:-python3}"
WHEELS=(tensorboardX==2.6.5 torch-fidelity==0.4.0)

if [ "$FETCH" = 1 ]; then
    exec "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform any -d .whl "${WHEELS[@]}"
fi

WORK="$OUTDIR/work"
SITE=/tmp/ncsn_gpu_check_site
NAMES=()
RESULTS=()
TIMES=()
TOTAL=0

step() {    # step NAME SECONDS COMMAND: run COMMAND (a bash string) under a time limit, its output in OUTDIR/NAME.log
    local name="$1" limit="$2" command="$3"
    if [ "$DRY" = 1 ]; then
        printf '[%s] (at most %s s)\n    %s\n' "$name" "$limit" "$command"
        NAMES+=("$name")
        TOTAL=$(( TOTAL + limit ))
        return 0
    fi
    echo "== $name (at most $limit s)"
    local start rc
    start=$(date +%s)
    timeout -k 10 "$limit" bash -c "$command" >"$OUTDIR/$name.log" 2>&1
    rc=$?
    NAMES+=("$name")
    TIMES+=($(( $(date +%s) - start )))
    if [ "$rc" = 0 ]; then RESULTS+=("ok"); elif [ "$rc" = 124 ] || [ "$rc" = 137 ]; then RESULTS+=("TIMED OUT");
    else RESULTS+=("FAILED (exit $rc)"); fi
    tail -n 5 "$OUTDIR/$name.log"
}

if [ "$DRY" = 0 ]; then
    mkdir -p "$OUTDIR" "$WORK" || exit 2
    if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
        echo "error: no CUDA GPU visible to $PY (torch.cuda.is_available() is False); --dry-run lists the steps" >&2
        exit 1
    fi
fi
export PYTHONUNBUFFERED=1
M="$PY main.py --device cuda --run $WORK/run"

step env 60 "nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; \
if ls .whl/*.whl >/dev/null 2>&1; then $PY -m pip install -q --no-index --no-deps --no-compile --target $SITE .whl/*.whl; fi; \
$PY -c 'import torch; print(\"torch\", torch.__version__, \"CUDA\", torch.version.cuda, torch.cuda.get_device_name(0), \
\"capability\", torch.cuda.get_device_capability(0), \"TF32 matmul\", torch.backends.cuda.matmul.allow_tf32, \
\"TF32 conv\", torch.backends.cudnn.allow_tf32)'"
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"

step tests 150 "$PY -m pytest -q -m cuda -p no:cacheprovider tests/test_cuda.py -rs"

step cli 110 "$PY benchmarks/gpu_check_setup.py $WORK && \
$M --config $WORK/train.yml --doc g && \
$M --resume_training --config $WORK/more.yml --doc g && \
for s in langevin pc ode heun euler_ancestral inpaint; do $M --test --doc g --config $WORK/s_\$s.yml -o $WORK/test_\$s || exit 1; done && \
$M --eval --doc g -o $WORK/eval && cp $WORK/eval/metrics.json $OUTDIR/cli_metrics.json && \
$M --compare --doc g -o $WORK/compare && cp $WORK/compare/comparison.json $OUTDIR/cli_comparison.json"

step bench 60 "$PY benchmarks/bench.py --device cuda --settings mnist cifar10 --quick --reps 10 \
--json $OUTDIR/bench.json"

step compile 60 "$PY benchmarks/bench.py --device cuda --settings cifar10 --quick --compile --reps 10 \
--json $OUTDIR/bench_compile.json"

step export 40 "$PY benchmarks/bench.py --device cuda --settings cifar10 --quick --reps 5 --sample-batch 500 \
--export 50000 --export-nfe 20 50 100 --json $OUTDIR/bench_export.json"

if [ "$DRY" = 1 ]; then
    echo "dry run: ${#NAMES[@]} steps, at most $TOTAL s in all; nothing was run"
    exit 0
fi
echo
echo "== summary (logs in $OUTDIR/)"
failed=0
for i in "${!NAMES[@]}"; do
    printf '%-8s %-18s %4d s\n' "${NAMES[$i]}" "${RESULTS[$i]}" "${TIMES[$i]}"
    [ "${RESULTS[$i]}" = ok ] || failed=1
done
grep -h -E "^\| (mnist|cifar10) " "$OUTDIR"/bench*.log 2>/dev/null
exit "$failed"
