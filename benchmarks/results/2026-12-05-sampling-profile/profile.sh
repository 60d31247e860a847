# Issue 19: where `liquidgen sample`'s seconds go on the GPU, against the compiled UNet-28 forward alone, and whether
# Inductor's coordinate-descent tuning (TUNINGS) speeds up its GroupNorm kernels. Carry .carry/data/MNIST; writes into $P.
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 TQDM_DISABLE=1
P=${P:-$OUT}; mkdir -p $P
# speed does not depend on training: a 1-step run of the shipped config
python -m liquidgen.cli train configs/mnist-unet.yaml --out /tmp/r/unet --set data.root=.carry/data train.steps=1 \
    train.sample_every=0 train.ckpt_every=0 train.log_every=1 > $P/ckpt.log 2>&1
timeout -k 5 120 python benchmarks/sampling_speed.py /tmp/r/unet --n 10000 --steps 50 --cfg 2 --phases 1000 \
    --label profile --out $P > $P/phases.log 2>&1
timeout -k 5 150 python benchmarks/liquid_kernels.py sample --backbone unet --presets 28 --inputs mnist \
    --modes reduce-overhead --tunings ${TUNINGS:-default coordinate} --out $P > $P/model.log 2>&1
# torch.compile's warm start against an AOTInductor package loaded in a fresh process (results/2026-12-06-aot-start-cpu)
timeout -k 5 240 python benchmarks/aot_start.py /tmp/r/unet --rows 2000 --out $P > $P/aot.log 2>&1
