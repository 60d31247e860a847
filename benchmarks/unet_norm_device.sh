# Issue 19, one device call (about 6 minutes): UNet-28's GroupNorms as Inductor writes them against the fused
# sampling kernel (liquidgen.kernels.group_norm), before and after in one call.
#  1. the kernel's test at UNet-28's norm sizes on CUDA (tests/test_group_norm_kernel.py), its output kept;
#  2. the compiled (CUDA graphs) sampling forward of 2,000 rows with each path, per-kernel split
#     (`liquid_kernels.py sample --kernels torch triton`, which builds the model with the option);
#  3. where the fused forward was faster: `liquidgen sample` of 10,000 MNIST samples at 50 steps with cfg 2, process
#     start to file written (`sampling_speed.py`), with OLD's src (default .carry/before/src: a copy of a commit
#     whose `kernels: auto` keeps PyTorch's norms) and this src, each from an empty compile cache (a user's first
#     call) and again (warm). A loaded run's kernels are the machine's `auto` (`spec.load_model` drops the option),
#     so this compares the two commits' `auto`. Carry .carry/data/MNIST (a 1-step checkpoint: speed does not depend
#     on training) and OLD.
# Everything lands in $OUT; the last lines are the tables.
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 TQDM_DISABLE=1
OLD=$PWD/${OLD:-.carry/before/src}
nvidia-smi --query-gpu=name --format=csv,noheader | tee $OUT/device.txt
python -m pytest -q tests/test_group_norm_kernel.py > $OUT/test.log 2>&1; tail -1 $OUT/test.log
timeout -k 5 240 python benchmarks/liquid_kernels.py sample --backbone unet --presets 28 --inputs mnist \
    --modes reduce-overhead --kernels torch triton --out $OUT > $OUT/forward.log 2>&1
tail -4 $OUT/forward.log
python - $OUT/sample.jsonl <<'PY' || exit 0
import json, sys
ms = {r["kernels"]: r["forward_ms"] for r in map(json.loads, open(sys.argv[1]))}
print("forward ms", ms)
sys.exit(0 if ms.get("triton", float("inf")) < ms.get("torch", 0) else 1)
PY
python -m liquidgen.cli train configs/mnist-unet.yaml --out /tmp/r/unet --set data.root=.carry/data train.steps=1 \
    train.sample_every=0 train.ckpt_every=0 train.log_every=1 > $OUT/ckpt.log 2>&1
S="python benchmarks/sampling_speed.py /tmp/r/unet --n 10000 --steps 50 --cfg 2 --sample-args=--batch=1000 --out $OUT"
for again in first again; do
  timeout -k 5 100 $S --python-path $OLD --compile-cache /tmp/cc-before --label before-$again | cut -c1-300
  timeout -k 5 150 $S --compile-cache /tmp/cc-after --label after-$again $([ $again = again ] && echo --fast-steps 2) \
      | cut -c1-300
done
