# One device call (issue 19, item 6): end-to-end sampling of 10,000 MNIST images, 50 Euler steps, cfg 2, from an
# empty compile cache. before = commit 3509401 (whole-model torch.compile with CUDA graphs; its src/ in
# .carry/before), after = regional compilation of block stacks. Speed does not depend on training: 1-step runs.
# The call ran this with `--cold` (a new empty compile cache per run), replaced since by `--compile-cache DIR`
# (one empty folder per run name: the same thing on a fresh machine).
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 TQDM_DISABLE=1
R=/tmp/r; L="data.root=.carry/data train.steps=1 train.sample_every=0 train.ckpt_every=0 train.log_every=1"
python -c "import torch, triton; print(torch.__version__, triton.__version__, torch.cuda.get_device_name())"
python -m liquidgen.cli train configs/mnist-liquid-S.yaml --out $R/liquid-p4 --set $L > /tmp/ckpt.log 2>&1
python -m liquidgen.cli train configs/mnist-liquid-S.yaml --out $R/liquid-p2 --set $L model.options.patch_size=2 >> /tmp/ckpt.log 2>&1
python -m liquidgen.cli train configs/mnist-unet.yaml --out $R/unet --set $L >> /tmp/ckpt.log 2>&1
tail -2 /tmp/ckpt.log
S="python benchmarks/sampling_speed.py --n 10000 --steps 50 --cfg 2 --sample-args=--batch=1000 --out $OUT"
$S $R/liquid-p4 --compile-cache /tmp/cc-before --python-path $PWD/.carry/before/src --label before
$S $R/liquid-p4 $R/unet --compile-cache /tmp/cc-after --label after
$S $R/liquid-p4 --label after-warm --fast-steps 2
$S $R/liquid-p2 --compile-cache /tmp/cc-after --label after
python -c "import json; [print(r['label'], r['run'], r['cold_cache'], round(r['wall_s'], 1), round(r.get('img_s_at_2_steps', 0))) for r in map(json.loads, open('$OUT/sampling.jsonl'))]"
