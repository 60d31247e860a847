# Builds .carry/, the ignored folder that device calls carry (see the device tool's README): MNIST and the CIFAR-10
# subset as `.carry/data`, the taef2 weights as `.carry/taesd`, and the captioned-emoji pixel pair (train and held-out
# splits, precomputed with MiniLM captions) as `.carry/emoji-64.tar.xz`. Run from the repository root:
#     bash benchmarks/carry.sh [SHARED_DATA]        # default ../shared/data; about 3 minutes, npm for the emoji
# What is there already is kept. Add /.carry/ to .git/info/exclude first.
set -euo pipefail
shared=${1:-../shared/data}
liquidgen=liquidgen
if [ -x .venv/bin/liquidgen ]; then liquidgen=.venv/bin/liquidgen; fi
mkdir -p .carry/data
for d in MNIST cifar10; do [ -d .carry/data/$d ] || cp -r "$shared/$d" .carry/data/; done
[ -d .carry/taesd ] || cp -r "$shared/weights/taesd" .carry/taesd
if [ ! -f .carry/emoji-64.tar.xz ]; then
  work=$(mktemp -d)
  HF_HUB_OFFLINE=1 $liquidgen data emoji --out "$work/emoji"
  for split in train heldout; do
    suffix=$([ $split = heldout ] && echo -heldout || true)
    HF_HUB_OFFLINE=1 $liquidgen precompute folder --root "$work/emoji/$split" --size 64 --text-encoder minilm \
      --out "$work/emoji-64$suffix"
  done
  tar cf - -C "$work" emoji-64 emoji-64-heldout | xz -T2 -6 > .carry/emoji-64.tar.xz
  rm -rf "$work"
fi
du -sh .carry/*
