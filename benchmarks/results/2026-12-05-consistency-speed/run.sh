# One device call (issue 21), H200, 2026-12-05, right after results/2026-12-05-sampling-warm on the same machine.
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 TQDM_DISABLE=1
timeout -k 5 ${LIMIT:-420} python -m liquidgen.cli bench speed unet:28 --batch 128 --mode reduce-overhead --out $OUT \
  --objective flow consistency:mode=ct,fp32_tangent_only=true,compile_mode=reduce-overhead > $OUT/log.txt 2>&1
grep -v "Warn\|warn(" $OUT/log.txt | tail -30
