# Device work of 2026-12-05 (issues 19 and 21) as one pipeline in its own process session, so that it outlives the
# 10-minute limit of one call while the machine stays held: `bash pipeline.sh` starts it and waits; `WAIT_ONLY=1 bash
# pipeline.sh` (the next call, chained at once) waits for the rest. Each call returns what exists as $OUT/all.tgz.
# Carry .carry/data/MNIST.
#  1. issue 21: the TrigFlow UNet-28 teacher (200 s) and its 50-step Euler score at cfg 1;
#  2. issue 21: its sCD student with fp32_tangent_only and the tangent and teacher as CUDA graphs, MINUTES long,
#     its 2 and 4 steps also at re-noising angles 0.7, 0.9 and 1.3 (sCM's 1.1 is the default);
#  3. issue 21, with SCT=1: sCT from scratch for the teacher's 200 s + MINUTES, the same options plus SCT_SET
#     (few_step.py --set flags, e.g. "--set optim.lr=1e-4");
#  4. issue 21: the teacher again, scored at cfg 1.25 too and with each sampler and grid at NFE 1, 2, 4, 8, 50 (the
#     records of step 1 are reused);
#  5. issue 19 (PROFILE=0 skips it), last so that a machine lost late costs the profile and not the students:
#     results/2026-12-05-sampling-profile/profile.sh.
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 TQDM_DISABLE=1
O=/tmp/o; mkdir -p $O/prof $O/fs
trap 'cp /tmp/runs/scd-fast/metrics.jsonl $O/fs/scd-metrics.jsonl 2>/dev/null
cp /tmp/runs/sct-fast/metrics.jsonl $O/fs/sct-metrics.jsonl 2>/dev/null; tar czf $OUT/all.tgz -C $O .' EXIT
if [ -z "$WAIT_ONLY" ]; then
    nvidia-smi --query-gpu=name --format=csv,noheader > $O/device.txt
    setsid bash -c "
timeout -k 5 330 python benchmarks/few_step.py teacher --mnist-root .carry/data --runs /tmp/runs --out $O/fs \
    --cfg 1 --nfes 50 --teacher-cfg 1.0 > $O/fs/teacher.log 2>&1
python benchmarks/few_step.py scd --mnist-root .carry/data --runs /tmp/runs --out $O/fs \
    --teacher-run /tmp/runs/teacher --teacher-cfg 1.0 --distill-minutes ${MINUTES:-7} --variant fast \
    --set objective.options.fp32_tangent_only=true --set objective.options.compile_mode=reduce-overhead \
    --student-grids consistency consistency:theta_mid=0.7 consistency:theta_mid=0.9 consistency:theta_mid=1.3 \
    --trajectory ${TRAJECTORY:-4} > $O/fs/scd.log 2>&1
[ "${SCT:-0}" = 0 ] || python benchmarks/few_step.py sct --mnist-root .carry/data --runs /tmp/runs --out $O/fs \
    --teacher-minutes 3.3333 --distill-minutes ${MINUTES:-7} --variant fast --trajectory ${TRAJECTORY:-4} \
    --set objective.options.fp32_tangent_only=true --set objective.options.compile_mode=reduce-overhead \
    ${SCT_SET:-} > $O/fs/sct.log 2>&1
timeout -k 5 400 python benchmarks/few_step.py teacher --mnist-root .carry/data --runs /tmp/runs --out $O/fs \
    --cfg 1 1.25 --teacher-cfg 1.0 > $O/fs/teacher-grid.log 2>&1
[ "${PROFILE:-1}" = 0 ] || P=$O/prof bash benchmarks/results/2026-12-05-sampling-profile/profile.sh
echo \$? > $O/DONE" < /dev/null > /dev/null 2>&1 &
fi
for i in $(seq ${WAIT:-570}); do [ -f $O/DONE ] && break; sleep 1; done
cat $O/device.txt; tail -1 $O/prof/phases.log | cut -c1-600; tail -3 $O/prof/model.log; tail -5 $O/prof/aot.log; grep -a "FD\|to train" $O/fs/teacher*.log | tail -4
tail -1 /tmp/runs/scd-fast/metrics.jsonl 2>/dev/null; tail -3 $O/fs/scd.log; tail -3 $O/fs/sct.log 2>/dev/null
cat $O/DONE 2>/dev/null
cat $O/fs/few_step.md $O/fs/trajectory.md 2>/dev/null
