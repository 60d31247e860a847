# 1-step runs of the shipped MNIST configs of UNet-28 and LiquidGen-S in DIR/unet and DIR/liquid, for speed
# measurements (speed does not depend on training); a run already there is kept, so stages of one device call that
# both need them (profile.sh, few_step_device.sh's E2E) train them once. Carry .carry/data/MNIST.
#   bash benchmarks/one_step_runs.sh /tmp/r [unet|liquid]      (one of them alone; default both)
D=${1:?usage: one_step_runs.sh DIR [unet|liquid]}
for run in unet:mnist-unet liquid:mnist-liquid-S; do
    [ -z "$2" ] || [ "$2" = "${run%%:*}" ] || continue
    [ -d "$D/${run%%:*}/checkpoints" ] || python -m liquidgen.cli train "configs/${run#*:}.yaml" --out "$D/${run%%:*}" \
        --set data.root=.carry/data train.steps=1 train.sample_every=0 train.ckpt_every=0 train.log_every=1
done
