# Issue 19, one device call (about 6 minutes): `liquidgen sample` of 10,000 MNIST samples at 50 steps with cfg 2,
# process start to file written (`sampling_speed.py`), with torch.compile (`--compile on`: a user's first call
# from an empty compile cache, then a second from the cache it left) against AOTInductor packages (`--compile aot`:
# the first call exports and writes the package into the checkpoint's aot/ folder, the second loads it), for
# LiquidGen-S (patch 4) and UNet-28. Carry .carry/data/MNIST. Speed does not depend on training: 1-step runs.
# Run 2026-12-06 on an H100 with torch 2.11.0+cu130: the aot calls crashed loading the package (as every CUDA package
# does with that build: results/2026-12-06-aot-cuda-h100); they now stop with liquidgen's error instead.
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 TQDM_DISABLE=1
nvidia-smi --query-gpu=name --format=csv,noheader | tee $OUT/device.txt
R=/tmp/r; L="data.root=.carry/data train.steps=1 train.sample_every=0 train.ckpt_every=0 train.log_every=1"
python -m liquidgen.cli train configs/mnist-liquid-S.yaml --out $R/liquid-p4 --set $L > $OUT/ckpt.log 2>&1
python -m liquidgen.cli train configs/mnist-unet.yaml --out $R/unet --set $L >> $OUT/ckpt.log 2>&1
S="timeout -k 5 280 python benchmarks/sampling_speed.py $R/liquid-p4 $R/unet --n 10000 --steps 50 --cfg 2 --out $OUT"
for mode in on aot; do
  for call in first again; do
    $S --compile-cache /tmp/cc-$mode --sample-args="--batch=1000 --compile=$mode" --label $mode-$call | cut -c1-200
  done
done
du -sh $R/*/checkpoints/*/aot 2>/dev/null
python - $OUT/sampling.jsonl <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
print(f"{'run':22} {'call':10} {'wall s':>7}")
for r in rows:
    print(f"{r['run'].split('/')[-1]:22} {r['label']:10} {r['wall_s']:7.1f}")
PY
