#!/usr/bin/env bash
# The GPU check: does the project train and run fast on a CUDA GPU? About 4 minutes on one
# H200 (8 at most), and it writes reports/bench/gpu.md. Steps, each timed and logged:
#   tests    pytest -m gpu on the test files with gpu marks (tests/gpu: channels-last vs
#            contiguous logits, AMP steps, pinned batches, ONNX export of a CUDA-trained
#            model, NCCL DDP when 2 GPUs exist; tests/faces: MTCNN batches on the GPU)
#   bench    EfficientFace vs ResNet-50 training and inference batches/s at batch 16 and
#            64, AMP off and on, channels-last, same-process interleaved rounds
#   data     prepare, align, train-ldg, soft-labels on a small synthetic set at 224 px
#   train-ef the real stage, 2 epochs with AMP and channels-last
#   ddp      the same stage under torchrun with 2 NCCL processes, when 2 GPUs exist
#
# Usage:
#   bash scripts/gpu_check.sh [--out DIR] [--wheels DIR]   on a machine with a CUDA GPU
#   bash scripts/gpu_check.sh --cpu [--out DIR]            dry run on the CPU, tiny sizes
#   bash scripts/gpu_check.sh --download-wheels DIR        where PyPI is reachable (below)
# LIGHTFER_GPU_CHECK=cpu is the same as --cpu. Every file (gpu.md, gpu.json, bench.json and
# the steps' logs) goes to --out, else $OUT when set, else a new temporary folder. A GPU run
# also writes reports/bench/gpu.md; a dry run never does. The steps share a budget of
# $LIGHTFER_GPU_CHECK_SECONDS (default 450): a step still running when it is spent is
# stopped, the later ones are skipped, and the report is written all the same. The exit
# status is 0 only when every step ran and succeeded.
#
# Python: the first of $LIGHTFER_PYTHON, .venv/bin/python (scripts/bootstrap.sh) and python3
# that imports the project's dependencies (and, for a GPU run, sees CUDA). The project is
# used from this checkout (PYTHONPATH), not installed. A GPU machine without network whose
# python3 holds torch but not pydantic or facenet-pytorch: run `--download-wheels .whl` where
# PyPI is reachable, bring .whl along, and pass `--wheels .whl` (they are installed into a
# temporary folder).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)

MODE=gpu
OUT_DIR=${OUT:-}
WHEELS=
[[ ${LIGHTFER_GPU_CHECK:-} == cpu ]] && MODE=cpu
while [[ $# -gt 0 ]]; do
    case $1 in
        --cpu) MODE=cpu ;;
        --out) OUT_DIR=$2; shift ;;
        --wheels) WHEELS=$2; shift ;;
        --download-wheels)
            # What a CUDA image with torch tends to lack of the check's needs: pydantic (with
            # its compiled core) and facenet-pytorch (MTCNN; --no-deps, see bootstrap.sh).
            download=("${PYTHON:-python3}" -m pip download --only-binary=:all: -d "$2"
                --implementation cp --python-version "${LIGHTFER_WHEEL_PYTHON:-3.12}"
                --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64
                --platform manylinux2014_x86_64)
            "${download[@]}" "pydantic>=2.6,<3"
            "${download[@]}" --no-deps "facenet-pytorch==2.6.0"
            exit 0 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "gpu_check: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/lightfer-gpu-check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
[[ -n $OUT_DIR ]] || OUT_DIR=$(mktemp -d "${TMPDIR:-/tmp}/lightfer-gpu-check-out.XXXXXX")
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
[[ -z $WHEELS ]] || WHEELS=$(cd "$WHEELS" && pwd)
cd "$ROOT"
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 DVC_NO_ANALYTICS=1

REQUIRED=(torch torchvision numpy PIL cv2 pyarrow pandas yaml pydantic onnx onnxruntime tqdm
    pytest skimage facenet_pytorch)
missing_modules() {
    "$1" -c 'import importlib.util, sys
print(" ".join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))' "${REQUIRED[@]}"
}
sees_cuda() {
    "$1" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' 2>/dev/null
}

PY=
for candidate in ${LIGHTFER_PYTHON:-"$ROOT/.venv/bin/python" python3}; do
    command -v "$candidate" >/dev/null || continue
    missing=$(missing_modules "$candidate")
    if [[ -n $missing && -n $WHEELS ]]; then
        PIP_ROOT_USER_ACTION=ignore "$candidate" -m pip install --quiet --no-index --no-deps \
            --no-compile --disable-pip-version-check --target "$WORK/site" "$WHEELS"/*.whl
        export PYTHONPATH=$PYTHONPATH:$WORK/site
        missing=$(missing_modules "$candidate")
    fi
    if [[ -n $missing ]]; then
        echo "gpu_check: $candidate lacks: $missing" >&2
    elif [[ $MODE == gpu ]] && ! sees_cuda "$candidate"; then
        echo "gpu_check: $candidate's torch sees no CUDA device" >&2
    else
        PY=$(command -v "$candidate")
        break
    fi
done
if [[ -z $PY ]]; then
    echo "gpu_check: no Python with the project's dependencies (and CUDA for a GPU run):" \
        "build .venv with scripts/bootstrap.sh, or pass --wheels DIR (see --help);" \
        "without a GPU, use --cpu" >&2
    exit 1
fi
echo "gpu_check: $MODE mode, $PY, files in $OUT_DIR"

failed=0
deadline=$(($(date +%s) + ${LIGHTFER_GPU_CHECK_SECONDS:-450}))
# step NAME DIR NOTE COMMAND...: run COMMAND in DIR within what is left of the budget, its
# output in $OUT_DIR/NAME.log; record its exit status and seconds in $WORK/steps.tsv.
step() {
    local name=$1 dir=$2 note=$3 start left status=0
    shift 3
    start=$(date +%s)
    left=$((deadline - start))
    if [[ $left -lt 10 ]]; then
        status=124 note="skipped: the check's time budget was spent"
    else
        echo "gpu_check: $name ..."
        (cd "$dir" && timeout --kill-after=10 "$left" "$@") >"$OUT_DIR/$name.log" 2>&1 ||
            status=$?
        [[ $status -ne 124 ]] || note="stopped: the check's time budget was spent"
    fi
    printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$(($(date +%s) - start))" "$note" \
        >>"$WORK/steps.tsv"
    if [[ $status -ne 0 ]]; then
        failed=1
        echo "gpu_check: $name failed (exit $status): $note" >&2
        [[ ! -f $OUT_DIR/$name.log ]] || tail -n 20 "$OUT_DIR/$name.log" >&2
    fi
}

HELPER="$ROOT/scripts/gpu_check.py"
# train-ef trains every seed of train.seeds: params.yaml has seed 0, params-ddp.yaml seed 1.
TRAIN_EF=(-m stages.train_ef --dataset synthetic --regime ldl)
"$PY" "$HELPER" params --mode "$MODE" --seed 0 --out "$WORK/params.yaml"
"$PY" "$HELPER" params --mode "$MODE" --seed 1 --out "$WORK/params-ddp.yaml"

# Only the files with gpu marks: collecting the whole suite needs every dependency (DVC,
# Prefect, NGT, dlib), which a GPU image need not have.
mapfile -t GPU_TESTS < <(grep -rl --include='test_*.py' 'pytest\.mark\.gpu' tests | sort)
step pytest "$ROOT" "pytest -m gpu, ${#GPU_TESTS[@]} files" \
    "$PY" -m pytest -m gpu "${GPU_TESTS[@]}" -p no:cacheprovider -q -rfEs
step bench "$ROOT" "EfficientFace vs ResNet-50, see below" \
    "$PY" "$HELPER" bench --mode "$MODE" --out "$OUT_DIR/bench.json"
step data "$WORK" "prepare, align, train-ldg, soft-labels" \
    "$PY" "$HELPER" stages --params params.yaml
step train-ef "$WORK" "python -m stages.train_ef, seed 0" \
    "$PY" "${TRAIN_EF[@]}" --params params.yaml

gpus=0
[[ $MODE == cpu ]] || gpus=$("$PY" -c 'import torch; print(torch.cuda.device_count())')
if [[ $gpus -ge 2 ]]; then
    step ddp "$WORK" "torchrun --standalone --nproc_per_node=2, seed 1" \
        "$PY" -m torch.distributed.run --standalone --nproc_per_node=2 "${TRAIN_EF[@]}" \
        --params params-ddp.yaml
else
    reason="$gpus GPU(s) here"
    [[ $MODE == gpu ]] || reason="a dry run on the CPU"
    printf 'ddp\t0\t0\tskipped: NCCL DDP needs 2 GPUs, %s\n' "$reason" >>"$WORK/steps.tsv"
    echo "gpu_check: ddp skipped ($reason)"
fi

"$PY" "$HELPER" report --mode "$MODE" --work "$WORK" --out "$OUT_DIR"
if [[ $MODE == gpu ]]; then
    mkdir -p "$ROOT/reports/bench"
    cp "$OUT_DIR/gpu.md" "$ROOT/reports/bench/gpu.md"
fi
echo "gpu_check: report in $OUT_DIR/gpu.md$([[ $failed -eq 0 ]] || echo ' (some steps failed)')"
exit "$failed"
