#!/usr/bin/env bash
# Issue 20, item 4: the guidance sweep behind each shipped config's sample.cfg that the MNIST head-to-head did not
# cover. One config per device call (an H200 call is capped at 10 minutes), from the repository root, $OUT set:
#   bash benchmarks/guidance_defaults.sh cifar-liquid|cifar-liquid-latent|cifar-dit|mnist-tld|mnist-text
# Each: the config's model trained for $MINUTES (default 200 s, the head-to-head's budget) of compiled training,
# then every scale scored at the config's own sampler and steps with 10,000 samples, FD with a bootstrap interval
# in both of the dataset's reference networks. Needs .carry/data/MNIST or .carry/data/cifar10 (the WebP tiles);
# cifar-liquid-latent also the taef2 weights in .carry/taesd (its latents are encoded on the device first).
# The MNIST reference networks are the head-to-head's files, so the FDs compare with its table; CIFAR-10's are
# fitted on the device first (RECIPES["cifar10"], about 30 s) unless .carry/reference-networks holds the pair
# the cifar-dit call fitted (results/2026-12-04-guidance-defaults; carry it, 11 MB, so the CIFAR FDs compare).
# LiquidGen-S samples a guided scale of 10,000 at 256 tokens in 100-130 s: the pixel sweep stops at 3, and even so
# needed a second call (2026-12-04: the first stopped after cfg 1.5; rerun at once on the still-warm machine with
# its quality.jsonl copied into $OUT, it resumed the trained run). At 64 latent tokens a scale takes ~25 s, and the
# latent sweep goes on to 5 (its 2026-12-04 run, to 3, was still falling there); CFG="2 3 4 5" sweeps those only.
# mnist-text reads .carry/mnist-text, the config's precompute with --limit 20000 (31 MB: carry
# [".carry/data/MNIST", ".carry/mnist-text"] alone); its samples are prompted "a handwritten zero" ... "nine"
# through the embeddings stored there (no text model on the device).
# Not here: the emoji configs (benchmarks/emoji_study.py sweeps them).
source benchmarks/device_env.sh
MINUTES=${MINUTES:-3.3333}
COMMON="--minutes $MINUTES --curve-every 1 --samples 10000 --sample-batch 2000 --cache $CACHE --runs $RUNS --out $OUT"
quality() { python -m liquidgen.cli bench quality "$@" $COMMON; }  # --set once per line: a second replaces it
case "$1" in
  cifar-liquid) quality configs/cifar10-liquid-S.yaml liquid:S --set $SET --cfg 1 1.5 2 3 --nfe 50 ;;
  cifar-liquid-latent)
    python -m liquidgen.cli precompute cifar10 --root .carry/data --size 64 --autoencoder taesd \
      --ae-option variant=taef2 weights=.carry/taesd --out /tmp/cifar10-taef2-64 &&
    quality configs/cifar10-liquid-S-latent.yaml liquid:S:patch_size=1 --set $SET data.root=/tmp/cifar10-taef2-64 \
      --reference cifar10 .carry/data --cfg ${CFG:-1 1.5 2 3 4 5} --nfe 50 ;;
  cifar-dit) quality configs/cifar10-dit-S-fm.yaml dit:S --set $SET --cfg 1 1.5 2 3 4 --nfe 50 ;;
  mnist-text) quality configs/mnist-text-liquid-S.yaml liquid:S --set $SET data.root=.carry/mnist-text \
      --reference mnist .carry/data --prompt-embeddings .carry/mnist-text --cfg 1 1.25 1.5 2 --nfe 50 \
      --prompts "a handwritten "{zero,one,two,three,four,five,six,seven,eight,nine} ;;
  mnist-tld) quality configs/mnist-dit-S-tld.yaml dit:S:mlp_conv=true --set $SET --cfg 1 1.25 1.5 2 \
      --sampler dpmpp_2m --nfe 15 ;;
  *) echo "usage: bash benchmarks/guidance_defaults.sh cifar-liquid|cifar-liquid-latent|cifar-dit|mnist-tld|mnist-text" >&2; exit 2 ;;
esac 2>&1 | grep -v '^{"key"' | tail -40
pack_grids
