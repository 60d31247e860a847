# Issue 19, one device call (about 5 minutes): UNet-28's GroupNorms as Inductor writes them against the fused
# sampling kernel (`model.options.kernels: triton`, liquidgen.kernels.group_norm), before and after in one call.
#  1. the kernel's test at UNet-28's sizes on CUDA (tests/test_group_norm_kernel.py), its output kept;
#  2. the compiled sampling forward of 2,000 rows, per-kernel split (`liquid_kernels.py sample --norm-kernels`);
#  3. `liquidgen sample` of 10,000 images at 50 steps with cfg 2, process start to file, twice per variant with
#     one compile cache (the second: a user's later call), on 1-step runs of configs/mnist-unet.yaml that differ
#     only in the option.
# Carry .carry/data/MNIST. Everything lands in $OUT; the last lines are the tables.
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 TQDM_DISABLE=1
R=/tmp/r; L="data.root=.carry/data train.steps=1 train.sample_every=0 train.ckpt_every=0 train.log_every=1"
nvidia-smi --query-gpu=name --format=csv,noheader | tee $OUT/device.txt
python -m pytest -q tests/test_group_norm_kernel.py > $OUT/test.log 2>&1; tail -1 $OUT/test.log
timeout -k 5 200 python benchmarks/liquid_kernels.py sample --backbone unet --presets 28 --inputs mnist \
    --modes reduce-overhead --norm-kernels torch triton --out $OUT > $OUT/forward.log 2>&1
python -m liquidgen.cli train configs/mnist-unet.yaml --out $R/unet --set $L > $OUT/ckpt.log 2>&1
python -m liquidgen.cli train configs/mnist-unet.yaml --out $R/unet-gn --set $L model.options.kernels=triton \
    >> $OUT/ckpt.log 2>&1
S="python benchmarks/sampling_speed.py --n 10000 --steps 50 --cfg 2 --out $OUT --compile-cache /tmp/cc --sample-args=--batch=1000"
for label in first again; do timeout -k 5 240 $S $R/unet $R/unet-gn --label $label > $OUT/e2e-$label.log 2>&1; done
tail -4 $OUT/forward.log
python - <<EOF
import json
for r in map(json.loads, open("$OUT/sampling.jsonl")):
    print(r.get("label"), r.get("run"), {k: v for k, v in r.items() if k.endswith("_s")})
EOF
