# Issue 19, one device call (about 7 minutes): the dense depthwise GEMM as a custom op that fixes its input's layout
# (`models/toeplitz.py`, `channel_gemm`) against the plain matmul it replaces, before and after in one call.
# BEFORE: a src/ folder without the change, carried, e.g.
#   git archive <commit before> src | tar -x -C .carry/before     # then carry .carry/before
#  1. the dense path's CUDA test (bf16 block, outputs and gradients against the conv path);
#  2. LiquidGen-S's compiled sampling forward of 2,000 rows, per-kernel split, at the native 16x32x32 (16x16 tokens),
#     before then after;
#  3. LiquidGen-S training at batch 256 on 16x32x32 (CUDA graphs, the reference path as `kernels: auto` compiles it);
#  4. the forward of 2. at the shipped MNIST config (patch 4, 7x7 tokens).
# Everything lands in $OUT (before/ and after/ records; logs); the last lines of each log are its table.
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1
O=${OUT:-/tmp/out}
BEFORE=$(realpath "${BEFORE:-.carry/before/src}")
mkdir -p "$O"
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$O/device.txt"
PYTHONPATH=$PWD/src python -m pytest -q tests/test_toeplitz.py > "$O/test.log" 2>&1; tail -1 "$O/test.log"
LK="python benchmarks/liquid_kernels.py"
forward() {  # the sampling forward at input $1, before then after
    input=$1
    for side in before after; do
        src=$PWD/src; [ $side = before ] && src=$BEFORE
        # shellcheck disable=SC2046  # the MNIST config's patch size
        PYTHONPATH=$src timeout -k 5 120 $LK sample --presets S --modes default --depthwise auto --kernels torch \
            --inputs $input $([ $input = mnist ] && echo --options patch_size=4) --out "$O/$side" >> "$O/forward.log" 2>&1
        grep -A1 "^input preset" "$O/forward.log" | tail -1 | sed "s/^/$side /"
    done
}
forward native
for side in before after; do
    src=$PWD/src; [ $side = before ] && src=$BEFORE
    PYTHONPATH=$src timeout -k 5 "${TRAIN_S:-130}" $LK train --presets S --kernels torch --modes reduce-overhead \
        --label $side --out "$O/$side" >> "$O/train.log" 2>&1
    tail -1 "$O/train.log" | sed "s/^/$side /"
done
forward mnist
