#!/usr/bin/env bash
# The MNIST head-to-head of issue 20, one contender per device call (an H200 call is capped at 10 minutes):
#   bash benchmarks/head_to_head.sh unet|liquid|liquid-p4|liquid-ts|dit|fpdm|minrf  (from the repository root, $OUT set)
# Needs .carry/data/MNIST (raw idx files) and, for minrf, minRF's rf.py + dit.py at 4fc10e0 in .carry/peers/minRF.
# Every contender is scored by the same two reference networks (see device_env.sh).
source benchmarks/device_env.sh
# LiquidGen-S samples about 2x slower than DiT-S/2: its whole protocol takes about 12 minutes, so run it twice
# with RUNS and OUT under /tmp (the second call resumes).
COMMON="--minutes 3.3333 --cfg 1 1.25 1.5 2 --nfe-at-best --curve-every 0.25 --curve-nfe 50 --samples 10000
        --curve-samples 2000 --sample-batch 2000 --cache $CACHE --out $OUT"
case "$1" in
  minrf) python benchmarks/peers/minrf_mnist.py --minrf .carry/peers/minRF --mnist-root .carry/data $COMMON ;;
  unet) python -m liquidgen.cli bench quality configs/mnist-unet.yaml unet:28 --set $SET --runs $RUNS $COMMON ;;
  # LiquidGen-S as the head-to-head ran it, at patch 2 (196 tokens); the config has used patch 4 since (liquid-p4,
  # 49 tokens: a quarter of the FLOPs per forward, issue 19).
  liquid) python -m liquidgen.cli bench quality configs/mnist-liquid-S.yaml liquid:S:patch_size=2 --set $SET \
            --runs $RUNS $COMMON ;;
  liquid-p4) python -m liquidgen.cli bench quality configs/mnist-liquid-S.yaml liquid:S:patch_size=4 --set $SET \
               --runs $RUNS $COMMON ;;
  # The flagship's time embedding, 1000 (the config) against 1 (what its consistency students need of a teacher), in
  # one study on one card: 50 steps at the sweep's three useful scales only, so that both fit two chained calls
  # (results/2026-12-07-liquid-time-scale-cpu: level on the digits).
  liquid-ts) python -m liquidgen.cli bench quality configs/mnist-liquid-S.yaml liquid:S:patch_size=4 \
               liquid:S:patch_size=4,time_scale=1 --set $SET --runs $RUNS --minutes 3.3333 --cfg 1 1.25 1.5 --nfe 50 \
               --curve-every 1 --samples 10000 --sample-batch 2000 --cache $CACHE --out $OUT ;;
  dit) python -m liquidgen.cli bench quality configs/mnist-dit-S.yaml dit:S --set $SET --runs $RUNS $COMMON ;;
  fpdm) python -m liquidgen.cli bench quality configs/mnist-fixed-point-dit-S.yaml fixed_point:dit-S --set $SET \
          --runs $RUNS $COMMON ;;
  *) echo "usage: bash benchmarks/head_to_head.sh unet|liquid|liquid-p4|liquid-ts|dit|fpdm|minrf" >&2; exit 2 ;;
esac 2>&1 | grep -v '^{"key"' | tail -40
pack_grids
