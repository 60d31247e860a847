# Device call 2 (issue 19): memory with recomputation, DiT vs facebookresearch/DiT at batch 256,
# fused-vs-reference MNIST curves, a compiled block profile, the depthwise micro-benchmark.
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1 PYTHONPATH=$PWD/src
python -c "import torch, triton; print(torch.__version__, triton.__version__, torch.cuda.get_device_name())" > $OUT/env.txt
[ -f benchmarks/depthwise.py ] && timeout 120 python benchmarks/depthwise.py --out $OUT 2>&1 | tail -12
timeout 100 python benchmarks/liquid_kernels.py train --out $OUT --presets L --inputs native --modes eager \
  --kernels triton --checkpointing 0 -1 --label after --batch 256 --steps 5 2>&1 | tail -3
timeout 150 python benchmarks/liquid_kernels.py train --out $OUT --presets S --inputs native --modes reduce-overhead \
  --kernels torch --checkpointing -1 --label after --batch 256 --steps 20 2>&1 | tail -2
PYTHONPATH=$PWD/src:$PWD/.carry/peers/pylib timeout 150 python benchmarks/peers/dit_speed.py --dit .carry/peers/DiT \
  --batch 256 --variants ref-fp32 ours-cudagraphs --steps 20 --out $OUT/dit_speed.json 2>&1 | tail -4
timeout 200 python benchmarks/liquid_kernels.py curves --out $OUT --mnist-root .carry/data --steps 2000 --batch 64 2>&1 | grep -v "^{" | tail -4
