# Issue 19, device call A: UNet-28 sampling forwards before/after the SDPA stride fix, Inductor layouts on/off.
# Needs .carry/before/src (liquidgen before the SDPA stride fix): `git archive 26bbffb src | tar x -C .carry/before`.
export TQDM_DISABLE=1 PYTHONUNBUFFERED=1
S="python benchmarks/liquid_kernels.py sample --backbone unet --presets 28 --inputs mnist --modes reduce-overhead"
mkdir -p $OUT/before $OUT/after
PYTHONPATH=$PWD/.carry/before/src timeout 150 $S --layouts nchw --inductor-layouts auto --out $OUT/before > $OUT/before.log 2>&1
PYTHONPATH=$PWD/src timeout 400 $S --layouts nchw nhwc --inductor-layouts auto off --out $OUT/after > $OUT/after.log 2>&1
tail -3 $OUT/before.log; tail -6 $OUT/after.log; nvidia-smi --query-gpu=name --format=csv,noheader
