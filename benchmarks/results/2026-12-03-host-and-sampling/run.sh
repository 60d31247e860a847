set -x
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 TQDM_DISABLE=1
R=/tmp/r; L="data.root=.carry/data train.steps=1 train.sample_every=0 train.ckpt_every=0 train.log_every=1"
python -c "import torch, triton; print(torch.__version__, triton.__version__, torch.cuda.get_device_name())"
python -m liquidgen.cli train configs/mnist-unet.yaml --out $R/unet --set $L > /tmp/ckpt.log 2>&1
python -m liquidgen.cli train configs/mnist-liquid-S.yaml --out $R/liquid --set $L >> /tmp/ckpt.log 2>&1
tail -3 /tmp/ckpt.log
python benchmarks/sampling_speed.py $R/unet $R/liquid --n 2000 --python-path $PWD/.carry/before/src --label before --out $OUT
python benchmarks/sampling_speed.py $R/unet $R/liquid --n 2000 --label after --sample-args "--batch 1000" --out $OUT
python benchmarks/sampling_speed.py $R/unet $R/liquid --n 10000 --label after --sample-args "--batch 1000" --fast-steps 2 --out $OUT
for v in before after; do
  P=$PWD/src; [ $v = before ] && P=$PWD/.carry/before/src
  PYTHONPATH=$P python -m liquidgen.cli bench speed unet:28 dit:S --batch 256 --mode reduce-overhead --steps 30 --out /tmp/train-$v > /tmp/train-$v.log 2>&1 || tail -20 /tmp/train-$v.log
  cp /tmp/train-$v/speed.jsonl $OUT/train-$v.jsonl
done
for v in before after; do python -c "import sys,json; [print('$v', r['key'], round(r['train_img_s']), round(r.get('mfu') or 0, 3), round(r.get('train_peak_gb') or 0, 2), round(r.get('sample_img_nfe_s') or 0)) for r in map(json.loads, open('$OUT/train-$v.jsonl'))]"; done
