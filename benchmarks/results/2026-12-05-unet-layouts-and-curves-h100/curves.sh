# Issue 19, device call B: the fused-vs-reference 2,000-step LiquidGen-S MNIST curves, the two paths side by side.
export TQDM_DISABLE=1 PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src
mkdir -p $OUT/curves
C="python benchmarks/liquid_kernels.py curves --mnist-root .carry/data --out $OUT/curves --steps 2000 --batch 64"
timeout ${LIMIT:-560} $C --paths torch --runs /tmp/curves-torch > $OUT/curve-torch.log 2>&1 &
timeout ${LIMIT:-560} $C --paths triton --runs /tmp/curves-triton > $OUT/curve-triton.log 2>&1
wait
tail -n 3 $OUT/curve-torch.log $OUT/curve-triton.log; nvidia-smi --query-gpu=name --format=csv,noheader
