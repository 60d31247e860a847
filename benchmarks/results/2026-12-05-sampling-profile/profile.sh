# Issue 19: where `liquidgen sample`'s seconds go on the GPU, against the compiled UNet-28 forward alone, and whether
# Inductor's coordinate-descent tuning (TUNINGS) speeds up its GroupNorm kernels. Carry .carry/data/MNIST; writes into $P.
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 TQDM_DISABLE=1
P=${P:-$OUT}; mkdir -p $P
# what importing costs before any work (the phases' import share): torch alone, then the CLI's import tree
python -X importtime -c "import torch" 2> $P/importtime-torch.log
python -X importtime -c "import liquidgen.cli" 2> $P/importtime-cli.log
# speed does not depend on training: a 1-step run of each shipped config (LiquidGen-S for the aot_compile probe)
bash benchmarks/one_step_runs.sh /tmp/r >> $P/ckpt.log 2>&1
timeout -k 5 120 python benchmarks/sampling_speed.py /tmp/r/unet --n 10000 --steps 50 --cfg 2 --phases 1000 \
    --label profile --out $P > $P/phases.log 2>&1
timeout -k 5 150 python benchmarks/liquid_kernels.py sample --backbone unet --presets 28 --inputs mnist \
    --modes reduce-overhead --tunings ${TUNINGS:-default coordinate} --out $P > $P/model.log 2>&1
# torch.compile's warm start against its own aot_compile artifact loaded in a fresh process
# (results/2026-12-06-precompile-cpu), for UNet-28 and LiquidGen-S; AOTINDUCTOR=1 adds the AOTInductor package's rows
# (every CUDA package crashed the lent H100's torch 2.11 on load: results/2026-12-06-aot-cuda-h100)
SKIP=$([ "${AOTINDUCTOR:-0}" = 1 ] || echo "--skip export")
for run in ${AOT_RUNS:-unet liquid}; do  # AOT_RUNS=unet: UNet-28's alone (the 15 s target), when device time is short
    # shellcheck disable=SC2086  # no flag, or the flag and its mode
    timeout -k 5 300 python benchmarks/aot_start.py /tmp/r/$run --rows 2000 $SKIP --out $P > $P/aot-$run.log 2>&1
done
