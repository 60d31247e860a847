# Issue 19, one device call (about 8 minutes): LiquidGen's sampling MLP with its GELU in the first GEMM's cuBLASLt
# epilogue (`kernels: auto`, `ChannelMixMLP.tokenwise`) against the reference MLP (`kernels: torch`), before and
# after in one call. Carry .carry/data/MNIST.
#  1. the CUDA tests of the path (outputs against a float64 reference, eager and compiled), output kept;
#  2. the compiled sampling forward of 2,000 rows with each path, per-kernel split, at the shipped MNIST LiquidGen-S
#     (patch 4, 7x7 tokens) and at the native 16x32x32 input (S, 16x16 tokens);
#  3. with E2E=1 (default): `liquidgen sample` of 10,000 MNIST samples at 50 steps with cfg 2, process start to file,
#     LiquidGen-S, alternating a copy of src/ with the path off (before) and this src (after), each from an empty
#     compile cache and twice more from the cache it left (warm calls differ by up to 4 s: a third call shows it).
# Everything lands in $OUT; the last lines of each log are its table.
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 TQDM_DISABLE=1
O=${OUT:-/tmp/out}
mkdir -p "$O"
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$O/device.txt"
python -m pytest -q tests/test_liquid_kernels.py -k "gelu or tokenwise" > "$O/test.log" 2>&1; tail -1 "$O/test.log"
F="python benchmarks/liquid_kernels.py sample --presets S --modes default --depthwise auto --kernels torch auto"
# shellcheck disable=SC2086  # F: the command and its flags, split into words
timeout -k 5 150 $F --inputs mnist --options patch_size=4 --out "$O" > "$O/forward.log" 2>&1
# shellcheck disable=SC2086
timeout -k 5 150 $F --inputs native --out "$O" >> "$O/forward.log" 2>&1
grep -A2 "^input preset" "$O/forward.log"
[ "${E2E:-1}" = 1 ] || exit 0
rm -rf /tmp/before && cp -r src /tmp/before
python - <<'EOF_PY' || exit 1
from pathlib import Path
p = Path("/tmp/before/liquidgen/kernels/__init__.py")
rule = '    if choice == "torch" or not x.is_cuda'
assert rule in p.read_text(), "the path-off edit did not apply"
p.write_text(p.read_text().replace(rule, '    if True or not x.is_cuda'))
EOF_PY
bash benchmarks/one_step_runs.sh /tmp/r liquid > "$O/train.log" 2>&1
for call in first second third; do
    for side in before after; do
        # shellcheck disable=SC2046  # the other src for the before side
        timeout -k 5 120 python benchmarks/sampling_speed.py /tmp/r/liquid --n 10000 --steps 50 --cfg 2 \
            $([ $side = before ] && echo --python-path /tmp/before) --compile-cache "/tmp/cache-$side" \
            --label "$side-$call" --out "$O" >> "$O/sampling.log" 2>&1
    done
done
tail -8 "$O/sampling.log"
