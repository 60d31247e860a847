# Issue 19, one device call (about 3 minutes): UNet-28's GroupNorms as Inductor writes them against the fused
# sampling kernel (`kernels: triton`, liquidgen.kernels.group_norm), before and after in one call.
#  1. the kernel's test at UNet-28's norm sizes on CUDA (tests/test_group_norm_kernel.py), its output kept;
#  2. the compiled (CUDA graphs) sampling forward of 2,000 rows with each path, per-kernel split
#     (`liquid_kernels.py sample --norm-kernels torch triton`, which builds the model with the option).
# End to end it cannot be compared yet: a loaded run's kernels are the machine's choice (`spec.load_model` drops the
# option), and `auto` keeps the UNet on PyTorch. If the forward wins, make `auto` pick the kernel, then time
# `liquidgen sample` before / after with `benchmarks/sampling_speed.py --python-path OLD/src`.
# Everything lands in $OUT; the last lines are the table.
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 TQDM_DISABLE=1
nvidia-smi --query-gpu=name --format=csv,noheader | tee $OUT/device.txt
python -m pytest -q tests/test_group_norm_kernel.py > $OUT/test.log 2>&1; tail -1 $OUT/test.log
timeout -k 5 240 python benchmarks/liquid_kernels.py sample --backbone unet --presets 28 --inputs mnist \
    --modes reduce-overhead --norm-kernels torch triton --out $OUT > $OUT/forward.log 2>&1
tail -4 $OUT/forward.log
