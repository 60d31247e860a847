# Issue 19, one device call, most wanted first: (1) `liquidgen sample` end to end (10,000 MNIST samples, 50 steps,
# cfg 2, process start to file) from an empty compile cache and again from the cache it left, for
# both models as committed, and for UNet-28 compiled without CUDA graphs (a copy of src/ made here, with
# CompiledForward's UNet in torch.compile's default mode: at 1,000 rows a forward keeps the GPU busy between launches,
# so the graphs may cost their capture and buy nothing), and UNet-28 as committed at `--batch 2500` (5,000 rows a
# forward, against the default 500 samples' 1,000); (2) the compiled sampling forward of UNet-28 and LiquidGen-S
# with fp32 weights under bf16 autocast (as liquidgen samples) against the model cast to bf16. Carry .carry/data/MNIST.
# Not run whole yet (about 520 s on an H200 expected); on H100s RUNS=/tmp/r/unet took 274 s
# (results/2026-12-07-sampling-modes-and-liquid-h100) and E2E_ONLY=1 with both models about 250 s
# (results/2026-12-07-sampling-tuning-h100).
#   bash benchmarks/sampling_modes_device.sh
#   RUNS=/tmp/r/unet bash benchmarks/sampling_modes_device.sh      # UNet-28 alone, about 270 s
#   RUNS=/tmp/r/liquid E2E_ONLY=1 bash benchmarks/sampling_modes_device.sh   # LiquidGen-S end to end alone
#   E2E_ONLY=1 bash benchmarks/sampling_modes_device.sh            # (1) as committed only (few_step_device.sh's E2E)
#   CALLS="first second third" E2E_ONLY=1 WHOLE=1 bash benchmarks/sampling_modes_device.sh
# CALLS: the end-to-end calls of (1), each after the one before (the later ones find its cache): a third shows the
# spread of a warm call. WHOLE=1 adds (1b) after (1), also under E2E_ONLY: LiquidGen-S end to end with the model
# compiled whole instead of one block (a copy of src/ made here): its forward was 9% faster, its compile from an
# empty cache about 16 s longer (results/2026-12-07-precompile-h100); end to end its warm calls were level with the
# regional compilation's and its first call 29 s slower (H100, 540 s for the CALLS line below and WHOLE=1 together,
# results/2026-12-07-e2e-whole-h100).
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 TQDM_DISABLE=1
O=${OUT:-/tmp/out}
mkdir -p $O
nvidia-smi --query-gpu=name --format=csv,noheader > $O/device.txt 2>&1
bash benchmarks/one_step_runs.sh /tmp/r ${RUNS:+$(basename $RUNS)} > $O/train.log 2>&1  # RUNS: one of /tmp/r/{unet,liquid}
# CACHE: the compile caches' folder (empty at the first call)
# shellcheck disable=SC2086  # RUNS: the run folders to time as committed (a short budget: RUNS=/tmp/r/unet)
for call in ${CALLS:-first second}; do  # as committed: a user's first call, then later ones finding its cache
    # shellcheck disable=SC2046  # the 2-step timing once, with the second call
    timeout -k 5 250 python benchmarks/sampling_speed.py ${RUNS:-/tmp/r/unet /tmp/r/liquid} --n 10000 --steps 50 \
        --cfg 2 --compile-cache ${CACHE:-/tmp/cache} --label $call --out $O \
        $([ $call = second ] && [ -z "$RUNS" ] && echo --fast-steps 2) >> $O/sampling.log 2>&1
done
if [ -n "$WHOLE" ]; then
    rm -rf /tmp/whole && cp -r src /tmp/whole
    python - <<'EOF_PY' || exit 1
from pathlib import Path
p = Path("/tmp/whole/liquidgen/generate.py")
regional = """            blocks = [torch.compile(block, dynamic=False) for block in model.blocks]
            self.forward, self.copy_out = model.with_blocks(blocks), False"""
assert regional in p.read_text(), "the whole-model edit did not apply"
p.write_text(p.read_text().replace(regional, "            self.forward, self.copy_out = torch.compile(model, dynamic=False), False"))
EOF_PY
    for call in ${CALLS:-first second}; do
        timeout -k 5 250 python benchmarks/sampling_speed.py /tmp/r/liquid --n 10000 --steps 50 --cfg 2 \
            --python-path /tmp/whole --compile-cache /tmp/cache-whole --label whole-$call --out $O >> $O/sampling.log 2>&1
    done
fi
[ -z "$E2E_ONLY" ] || exit 0
rm -rf /tmp/nograph && cp -r src /tmp/nograph
NEW='torch.compile(model, dynamic=False), False'
sed -i "s/torch.compile(model, mode=\"reduce-overhead\", dynamic=False), True/$NEW/" /tmp/nograph/liquidgen/generate.py
grep -q "$NEW" /tmp/nograph/liquidgen/generate.py || { echo "the no-CUDA-graphs edit did not apply"; exit 1; }
for call in first second; do
    timeout -k 5 150 python benchmarks/sampling_speed.py /tmp/r/unet --n 10000 --steps 50 --cfg 2 \
        --python-path /tmp/nograph --compile-cache /tmp/cache-nograph --label nograph-$call --out $O \
        >> $O/sampling.log 2>&1
done
for call in first second; do  # UNet-28 as committed at 5,000 rows a forward (--batch 2500) against the default 1,000
    timeout -k 5 150 python benchmarks/sampling_speed.py /tmp/r/unet --n 10000 --steps 50 --cfg 2 \
        --sample-args "--batch 2500" --compile-cache /tmp/cache-batch --label batch2500-$call --out $O \
        >> $O/sampling.log 2>&1
done
for bb in unet:28 $([ -z "$RUNS" ] && echo liquid:S); do  # RUNS set: UNet-28 alone
    timeout -k 5 150 python benchmarks/liquid_kernels.py sample --out $O --backbone ${bb%%:*} --presets ${bb#*:} \
        --inputs mnist --depthwise conv --weights fp32 bf16 >> $O/weights.log 2>&1
done
grep -h "^mnist" $O/weights.log
python -c "
import json
for r in map(json.loads, open('$O/sampling.jsonl')):
    print(r.get('label'), r.get('run', ''), {k: v for k, v in r.items() if k.endswith('_s') or k.endswith('img_s')})"
