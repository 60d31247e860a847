# One device call (issue 19, item 6 and the fused-kernel curves), H200, 2026-12-05, as it ran except one line: the
# phase timing ran as an equivalent throwaway script, since folded into `sampling_speed.py --phases`.
# Carry .carry/data/MNIST. Speed does not depend on training: 1-step runs of the shipped configs.
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 TQDM_DISABLE=1
R=/tmp/r; L="data.root=.carry/data train.steps=1 train.sample_every=0 train.ckpt_every=0 train.log_every=1"
python -c "import torch, triton; print(torch.__version__, triton.__version__, torch.cuda.get_device_name())"
python -m liquidgen.cli train configs/mnist-liquid-S.yaml --out $R/liquid-p4 --set $L > /tmp/ckpt.log 2>&1
python -m liquidgen.cli train configs/mnist-unet.yaml --out $R/unet --set $L >> /tmp/ckpt.log 2>&1
S="python benchmarks/sampling_speed.py --n 10000 --steps 50 --cfg 2 --out $OUT --compile-cache /tmp/cc"
$S $R/liquid-p4 $R/unet --sample-args=--batch=1000 --label first     # empty caches: a user's first call
$S $R/liquid-p4 $R/unet --sample-args=--batch=1000 --label again     # the same caches: a later call
$S $R/unet --sample-args=--batch=5000 --label again-batch5000         # a new batch shape: compiles again
$S $R/unet --sample-args="--batch=1000 --compile=off" --label eager
$S $R/liquid-p4 $R/unet --phases 1000 --label phases-warm
timeout 200 python benchmarks/liquid_kernels.py curves --out $OUT --mnist-root .carry/data
