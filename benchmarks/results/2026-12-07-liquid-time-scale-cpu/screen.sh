# CPU screen (2026-12-07): the flow LiquidGen's time embedding at time_scale 1000 (every config's default) against 1
# (what its consistency students need, configs/mnist-liquid-S-scm.yaml), on the demo's recipe. Fixed steps, not
# minutes, so that the shared 2-core machine's load changes the time a run takes, not what it trains. From the
# repository root: bash benchmarks/results/2026-12-07-liquid-time-scale-cpu/screen.sh /tmp/ts2
OUT=${1:-/tmp/ts2}
export PYTHONPATH=src OMP_NUM_THREADS=1  # two single-threaded processes side by side on the two cores
trainrun() {  # time_scale, seed
  .venv/bin/liquidgen train configs/digits-liquid-tiny.yaml --out $OUT/runs/ts$1-seed$2 --overwrite \
      --set train.steps=3000 train.seed=$2 model.options.time_scale=$1 train.sample_every=0 train.ckpt_every=3000 \
      > $OUT/ts$1-seed$2.train.log 2>&1
}
evalrun() {  # 10,000 samples at the config's 30 Euler steps, cfg 1 and 1.25 (the demo's sweep: 1.5 and 2 far worse)
  .venv/bin/liquidgen eval $OUT/runs/ts$1-seed$2 --data digits --cfg 1 1.25 --n 10000 --cache $OUT/cache \
      --out $OUT/ts$1-seed$2.jsonl > $OUT/ts$1-seed$2.eval.log 2>&1
}
mkdir -p $OUT/runs
for seed in 0 1; do trainrun 1000 $seed & trainrun 1 $seed & wait; done
for seed in 0 1; do evalrun 1000 $seed & evalrun 1 $seed & wait; done
