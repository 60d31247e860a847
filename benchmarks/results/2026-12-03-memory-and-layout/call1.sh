# Device call 1 (issue 19): CUDA tests, then LiquidGen-S / -B training before (HEAD's src) vs after (token-major).
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1
NOW=$PWD/src; BEFORE=$PWD/.carry/before/src
python -c "import torch, triton; print(torch.__version__, triton.__version__, torch.cuda.get_device_name())" | tee $OUT/env.txt
python -c "import torchvision, huggingface_hub; print('torchvision', torchvision.__version__)" >> $OUT/env.txt 2>&1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv >> $OUT/env.txt
PYTHONPATH=$NOW timeout 150 python -m pytest -q -rs -p no:cacheprovider tests/test_liquid_kernels.py tests/test_liquid_layout.py > $OUT/tests_cuda.log 2>&1; echo "tests rc $?"; tail -5 $OUT/tests_cuda.log
for preset in S B; do
  for v in before after; do
    P=$NOW; [ $v = before ] && P=$BEFORE
    PYTHONPATH=$P timeout 200 python benchmarks/liquid_kernels.py train --out $OUT --presets $preset --inputs native \
      --kernels torch --label $v --batch 256 --steps 20 2>&1 | tail -3
  done
done
