# issue 22 study, one contender per call: $1 contender, $2 minutes, $3 samples per prompt set and scale, rest: extra
# emoji_study.py arguments (e.g. --variant mlp --set model.options.context_mlp=true). Carry .carry/emoji-64.tar.xz,
# .carry/emoji_call.sh, .carry/emoji-eval (and .carry/taesd for a -latent contender).
export PYTHONPATH=$PWD/src TQDM_DISABLE=1
c=$1; m=$2; n=$3; shift 3
mkdir -p /tmp/emoji /tmp/study && tar xJf .carry/emoji-64.tar.xz -C /tmp/emoji && cp .carry/emoji-eval/* /tmp/study/
if [[ $c == *-latent ]]; then for s in "" -heldout; do python -m liquidgen.cli precompute precomputed \
  --root /tmp/emoji/emoji-64$s --size 64 --autoencoder taesd --ae-option variant=taef2 weights=.carry/taesd \
  --text-encoder minilm --out /tmp/emoji/emoji-taef2-64$s --device cuda 2>&1 | tail -1; done; fi
timeout -k 5 ${LIMIT:-540} python benchmarks/emoji_study.py $c --data /tmp/emoji --runs /tmp/runs --out /tmp/study \
  --minutes $m --n $n --cfg ${CFG:-1 2 3 4.5} "$@" > $OUT/log.txt 2>&1; tail -30 $OUT/log.txt | grep -v "Warning\|warn("
cd /tmp/study && cp /tmp/runs/*/metrics.jsonl metrics.jsonl 2>/dev/null
tar cf $OUT/study-$c.tar --exclude=cache --exclude='*.safetensors' . ; ls
