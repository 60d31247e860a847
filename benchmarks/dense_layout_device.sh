# Issue 19, one device call (about 9 minutes): the dense depthwise GEMM as a custom op that fixes its input's layout
# (`models/toeplitz.py`, `channel_gemm`, its token count padded to a multiple of 8 for aligned tensor-core kernels)
# against the plain matmul it replaces, before and after in one call; and with it, the sampling MLP's GELU in the
# GEMM epilogue (`kernels.use_gelu_gemm`), which lost alone because of that GEMM's copies
# (results/2026-12-08-gelu-gemm-h100).
# BEFORE: a src/ folder without the change, carried (with .carry/data/MNIST for E2E=1):
#   mkdir -p .carry/before && git archive bd0663e src | tar -x -C .carry/before     # bd0663e: the commit before it
#  1. the CUDA tests of both (a bf16 block's outputs and gradients, dense against conv; the MLP against float64);
#  2. LiquidGen-S's compiled sampling forward of 2,000 rows, per-kernel split, at the native 16x32x32 (16x16 tokens),
#     before, then after with the reference MLP (`--kernels torch`) and with the epilogue MLP (`auto`, the default);
#  3. LiquidGen-S training at batch 256 on 16x32x32 (CUDA graphs, the reference path as `kernels: auto` compiles it),
#     the 30 costliest kernels of a step in each record (`top_kernels`: where the training copies are, if any);
#  4. the forward of 2. at the shipped MNIST config (patch 4, 7x7 tokens);
#  5. with E2E=1: `liquidgen sample` of 10,000 MNIST samples at 50 steps with cfg 2, process start to file, of the
#     shipped LiquidGen-S, before and after alternating, from empty compile caches and once warm (about 4 minutes
#     more: give it a call of its own, `STAGES=e2e`).
# STAGES picks parts (default "test native train mnist"; e2e only with E2E=1 or named).
# Everything lands in $OUT (before/ and after/ records; logs); the last lines of each log are its table.
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1
O=${OUT:-/tmp/out}
BEFORE=$(realpath "${BEFORE:-.carry/before/src}")
mkdir -p "$O"
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$O/device.txt"
STAGES=${STAGES:-test native train mnist$([ "${E2E:-0}" = 1 ] && echo " e2e")}
stage() { [[ " $STAGES " == *" $1 "* ]]; }
stage test && { PYTHONPATH=$PWD/src python -m pytest -q tests/test_toeplitz.py tests/test_liquid_kernels.py \
                    -k "toeplitz or gelu or tokenwise" > "$O/test.log" 2>&1; tail -1 "$O/test.log"; }
LK="python benchmarks/liquid_kernels.py"
forward() {  # the sampling forward at input $1, before then after
    input=$1
    for side in before after; do
        src=$PWD/src kernels="torch auto"; [ $side = before ] && src=$BEFORE kernels=torch
        # shellcheck disable=SC2046,SC2086  # the MNIST config's patch size; the kernel paths
        PYTHONPATH=$src timeout -k 5 150 $LK sample --presets S --modes default --depthwise auto --kernels $kernels \
            --inputs $input $([ $input = mnist ] && echo --options patch_size=4) --out "$O/$side" >> "$O/forward.log" 2>&1
        grep -A2 "^input preset" "$O/forward.log" | tail -"$(wc -w <<< "$kernels")" | sed "s/^/$side /"
    done
}
stage native && forward native
for side in before after; do
    stage train || break
    src=$PWD/src; [ $side = before ] && src=$BEFORE
    PYTHONPATH=$src timeout -k 5 "${TRAIN_S:-130}" $LK train --presets S --kernels torch --modes reduce-overhead \
        --label $side --out "$O/$side" >> "$O/train.log" 2>&1
    tail -1 "$O/train.log" | sed "s/^/$side /"
done
stage mnist && forward mnist
stage e2e || exit 0
PYTHONPATH=$PWD/src bash benchmarks/one_step_runs.sh /tmp/r liquid > "$O/e2e-train.log" 2>&1
for call in first second; do
    for side in before after; do
        src=$PWD/src; [ $side = before ] && src=$BEFORE
        timeout -k 5 110 python benchmarks/sampling_speed.py /tmp/r/liquid --n 10000 --steps 50 --cfg 2 \
            --python-path "$src" --compile-cache "/tmp/cache-$side" --label "$side-$call" --out "$O" >> "$O/e2e.log" 2>&1
    done
done
tail -4 "$O/sampling.jsonl"
