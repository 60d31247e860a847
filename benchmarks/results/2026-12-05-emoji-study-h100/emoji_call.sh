# Issue 22's study, one device call: $1 contenders (comma-separated), $2 minutes, $3 samples per prompt set and scale,
# rest: extra emoji_study.py arguments; CFG and LIMIT from the environment. Run from the repository root as
# `bash benchmarks/results/2026-12-05-emoji-study-h100/emoji_call.sh ...` (this study ran a copy in .carry/). Carry
# .carry/emoji-64.tar.xz (the two pixel datasets with MiniLM captions: `bash benchmarks/carry.sh`) and .carry/taesd
# for a -latent contender. The prompt matcher and reference networks come from $EVAL (this study's,
# committed, so that later rows are scored by the same three networks); with none there the study fits them (about
# 5 minutes on an H100) and they come back in $OUT.
export PYTHONPATH=$PWD/src TQDM_DISABLE=1 PYTHONUNBUFFERED=1
EVAL=${EVAL:-benchmarks/results/2026-12-05-emoji-study-h100/eval}
cs=$1; m=$2; n=$3; shift 3
mkdir -p /tmp/emoji /tmp/study && tar xJf .carry/emoji-64.tar.xz -C /tmp/emoji
if ls $EVAL/*.safetensors >/dev/null 2>&1; then cp $EVAL/*.safetensors /tmp/study/; fi
if [[ $cs == *-latent* ]]; then for s in "" -heldout; do python -m liquidgen.cli precompute precomputed \
  --root /tmp/emoji/emoji-64$s --size 64 --autoencoder taesd --ae-option variant=taef2 weights=.carry/taesd \
  --text-encoder minilm --out /tmp/emoji/emoji-taef2-64$s --device cuda 2>&1 | tail -1; done; fi
timeout -k 5 ${LIMIT:-540} python benchmarks/emoji_study.py ${cs//,/ } --data /tmp/emoji --runs /tmp/runs \
  --out /tmp/study --minutes $m --n $n --cfg ${CFG:-1 2} "$@" > $OUT/log.txt 2>&1
grep -v "Warning\|warn(" $OUT/log.txt | tail -25
if ! ls $EVAL/*.safetensors >/dev/null 2>&1; then cp /tmp/study/*.safetensors $OUT/; fi
cd /tmp/study && for r in /tmp/runs/*/; do cp $r/metrics.jsonl metrics-$(basename $r).jsonl; done
tar cf $OUT/study.tar --exclude=cache --exclude='*.safetensors' . ; ls -la . $OUT
