# Four device calls on one H200 (2026-12-03), each `bash run.sh`-style from the repository root, $OUT the results.
# Call 1 (train-S.jsonl, env.txt); its sample step ran out of CUDA memory counting FLOPs at 2,000 rows (now counted at one).
python -c "import torch, triton; print(torch.__version__, triton.__version__, torch.cuda.get_device_name())" | tee $OUT/env.txt
python benchmarks/liquid_kernels.py train --out $OUT --presets S --inputs native --kernels torch --depthwise conv matmul
# Call 2 (sample.jsonl, train-B.jsonl)
python benchmarks/liquid_kernels.py sample --out $OUT --inputs native mnist --depthwise conv matmul
python benchmarks/liquid_kernels.py train --out $OUT --presets B --inputs native --kernels torch --depthwise conv matmul
# Call 3 (*-contiguous-copy.jsonl): the same sample and train-S commands with dense_depthwise's GEMM input made
# contiguous (`.transpose(0, 1).contiguous()`), a variant tried and reverted.
python benchmarks/liquid_kernels.py sample --out $OUT --inputs native mnist --depthwise conv matmul
python benchmarks/liquid_kernels.py train --out $OUT --presets S --inputs native --kernels torch --depthwise conv matmul
# Call 4 (sample-expand-as-gemm.jsonl): GatedDepthwiseStimulusConv's expand as torch.matmul over (B, C, L) on the
# dense path, a variant tried and reverted.
python benchmarks/liquid_kernels.py sample --out $OUT --inputs native --depthwise conv matmul
