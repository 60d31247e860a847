# One contender of the 200 s MNIST head-to-head (issue 20): `bash run.sh NAME` from the repository root (as .carry/h2h.sh).
# The third call was `bash run.sh unet cifar 130`: UNet-28 again, compiled, then benchmarks/cifar_classifier.py.
set -uo pipefail
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 TQDM_DISABLE=1
python -c "import torch; print(torch.__version__, torch.cuda.get_device_name())" | tee $OUT/env.txt
nvidia-smi --query-gpu=name,clocks.sm,power.limit --format=csv >> $OUT/env.txt 2>&1
COMMON="--minutes 3.3333 --cfg 1 1.25 1.5 2 --nfe-at-best --curve-every 0.25 --curve-nfe 50 --samples 10000 --curve-samples 2000 --cache .carry/cache --out $OUT"
SET="optim.schedule=constant data.root=.carry/data train.compile=true train.compile_mode=reduce-overhead"
case "$1" in
  minrf) python benchmarks/peers/minrf_mnist.py --minrf .carry/peers/minRF --mnist-root .carry/data $COMMON ;;
  unet) python -m liquidgen.cli bench quality configs/mnist-unet.yaml unet:28 --set $SET --runs /tmp/runs $COMMON ;;
  liquid) python -m liquidgen.cli bench quality configs/mnist-liquid-S.yaml liquid:S --set $SET --runs /tmp/runs $COMMON ;;
  dit) python -m liquidgen.cli bench quality configs/mnist-dit-S.yaml dit:S --set $SET --runs /tmp/runs $COMMON ;;
  fpdm) python -m liquidgen.cli bench quality configs/mnist-fixed-point-dit-S.yaml fixed_point:dit-S --set $SET --runs /tmp/runs $COMMON ;;
esac 2>&1 | grep -v '^{"key"' | tail -60
ls -la $OUT
if [ "${2:-}" = cifar ]; then
  timeout ${3:-120} python benchmarks/cifar_classifier.py --root .carry/data --out $OUT/cifar_classifier.jsonl --budget $(( ${3:-120} - 40 ))
fi
