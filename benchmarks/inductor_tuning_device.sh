# Issue 19: do Inductor's own settings close part of the memory-bound gap? A compiled LiquidGen-S block spends 4.0 of
# its 8.9 ms in Inductor's and other memory-bound kernels, 2.7x the block's byte bound, and UNet-28's sampling forward
# 58% of its 26 ms in Inductor's norm and epilogue kernels (results/2026-12-07-sampling-modes-and-liquid-h100); both
# were only ever compiled with Inductor's defaults. Each case is its own process under a timeout (CASE_S, default
# 150 s), so a slow compile cannot take the others with it, the defaults first:
#  - TRAIN_CASES: LiquidGen-S training at batch 256 (native 16x32x32, CUDA graphs), MODE:TUNING each (TUNINGS in
#    liquid_kernels.py: coordinate descent on each Triton kernel's launch configuration, aggressive fusion, ...;
#    max-autotune: GEMM and conv templates whose epilogues Inductor can fuse);
#  - SAMPLE_CASES: the same for UNet-28's compiled sampling forward of 2,000 rows;
#  - LIQUID=1: the shipped MNIST LiquidGen-S's (patch 4) compiled sampling forward with Inductor's code against the
#    fused Triton block ops forced in (they lose by 6-8% in training, by 12% in this forward).
# No data needed. Ran on H100s on 2026-12-07: the training cases (results/2026-12-07-inductor-tuning-h100: coordinate
# descent +3.9%, aggressive fusion level; coordinate needed more than 150 s to compile from an empty cache and
# max-autotune did not finish in 400 s, so give CASE_S=330 to coordinate and leave max-autotune out), and both
# sampling forwards (results/2026-12-07-sampling-tuning-h100: coordinate descent 11.7% faster for UNet-28 but lost
# end to end; the fused ops lose LiquidGen-S's by 12%):
#   TRAIN_CASES= SAMPLE_CASES="reduce-overhead:default reduce-overhead:coordinate" CASE_S=270 LIQUID=0 \
#       bash benchmarks/inductor_tuning_device.sh                         # UNet-28's sampling forward, 260 s
#   TRAIN_CASES= SAMPLE_CASES= bash benchmarks/inductor_tuning_device.sh  # LiquidGen-S's, fused ops or not
# Not run yet:
#   PRESETS="S B" ...                                                     # LiquidGen-B's training too (longer)
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
O=${OUT:-/tmp/out}
mkdir -p $O
nvidia-smi --query-gpu=name --format=csv,noheader > $O/device.txt 2>&1
LK="python benchmarks/liquid_kernels.py"
CASES="reduce-overhead:default reduce-overhead:coordinate reduce-overhead:aggressive max-autotune:default"
# shellcheck disable=SC2086  # PRESETS and the case lists: words
for case in ${TRAIN_CASES-$CASES}; do
    timeout -k 5 "${CASE_S:-150}" $LK train --out $O --presets ${PRESETS:-S} --kernels torch --modes ${case%%:*} \
        --tunings ${case#*:} --label tuning >> $O/train.log 2>&1 || echo "train $case: exit $?" >> $O/train.log
done
# shellcheck disable=SC2086
for case in ${SAMPLE_CASES-$CASES}; do
    timeout -k 5 "${CASE_S:-150}" $LK sample --out $O --backbone unet --presets 28 --inputs mnist \
        --modes ${case%%:*} --tunings ${case#*:} >> $O/sample.log 2>&1 || echo "sample $case: exit $?" >> $O/sample.log
done
[ "${LIQUID:-1}" = 0 ] || timeout -k 5 "${CASE_S:-150}" $LK sample --out $O --presets S --inputs mnist \
    --options patch_size=4 --depthwise auto --modes reduce-overhead --kernels torch triton >> $O/sample.log 2>&1 \
    || echo "sample liquid: exit $?" >> $O/sample.log
grep -sh "exit" $O/train.log $O/sample.log
python -c "
import json
for name in ('train', 'sample'):
    try:
        rows = [json.loads(line) for line in open('$O/' + name + '.jsonl')]
    except FileNotFoundError:
        continue
    for r in rows:
        speed = r.get('train_img_s') or r.get('img_nfe_s')
        print(name, r.get('preset'), r.get('mode'), r.get('tuning'), r.get('kernels'), r.get('error') or
              f\"{speed:,.0f} img/s  MFU {100 * (r.get('mfu') or 0):.1f}%  {r.get('step_ms') or r.get('forward_ms'):.2f} ms\")"
