# Sourced by the quality scripts that run as one device call (head_to_head.sh, guidance_defaults.sh), from the
# repository root with $OUT set: the environment, the scoring cache, the run folders and the training settings
# they share, and the packing of their grids.
set -uo pipefail
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 TQDM_DISABLE=1
CACHE=/tmp/liquidgen-eval-cache
# A rerun with the same $RUNS and $OUT resumes: trained runs are kept, scored records skipped.
RUNS=${RUNS:-/tmp/runs}
# Every MNIST score uses the head-to-head's reference networks (fitted once on a CPU): refitting them on another
# machine would give other weights, and FDs not comparable with the recorded ones.
mkdir -p $CACHE && cp benchmarks/results/2026-12-04-mnist-head-to-head/reference-networks/*.safetensors $CACHE/
# CIFAR-10's pair (11 MB, not committed) as an earlier call fitted them, where carried: without them each call fits
# its own, and its FDs compare only within the call.
if ls .carry/reference-networks/*.safetensors >/dev/null 2>&1; then cp .carry/reference-networks/*.safetensors $CACHE/; fi
python -c "import torch; print(torch.__version__, torch.cuda.get_device_name())" | tee $OUT/env.txt
# Each contender trains its shipped config, compiled with CUDA graphs, at a constant learning rate.
SET="optim.schedule=constant data.root=.carry/data train.compile=true train.compile_mode=reduce-overhead"

# A call returns at most 8 files: the grids travel as one archive.
pack_grids() {
  if ls $OUT/samples-*.png >/dev/null 2>&1; then (cd $OUT && tar czf grids.tgz samples-*.png && rm samples-*.png); fi
  ls -la $OUT
}
