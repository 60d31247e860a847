# Issue 21's device work on one warm machine, in its own process session (setsid), so that it outlives one call's
# 10 minutes: `bash benchmarks/few_step_device.sh` starts it and waits up to WAIT seconds (default 570);
# `WAIT_ONLY=1 bash benchmarks/few_step_device.sh`, the next call chained at once (an idle machine goes back after
# 30 s), waits for the rest. Each call returns what exists as $OUT/all.tgz. Carry .carry/data/MNIST in every call:
# a chained call that names no carry removes it from the machine, and the stages still to start then fail.
# A teacher handed on between sessions (its 200 s of training and the compilation are then saved, and students of
# different sessions share one teacher): TEACHER_BACK=1 returns the trained teacher's EMA weights as
# $OUT/teacher.tgz.00, .01 (split below the 16 MiB a returned file may have); here `cat teacher.tgz.* | tar xz -C
# .carry` unpacks .carry/teacher, and TEACHER=.carry/teacher (carried too) scores that one instead of training one.
# (2026-12-07: the teacher's 25 MB, MNIST's 12 and the repository's 47 MB of tracked files exceed the 64 MiB a call
# may carry, so a session trains its own teacher; stages that need none, sCT and the profile, carry MNIST alone.)
# Stages, in order (what matters most first, so that a machine lost late costs the least):
#  1. the TrigFlow UNet-28 teacher (200 s of training), scored at cfg 1 with Euler at 50 steps (uniform and Karras
#     grids) and as a consistency model at 1, 2 and 4 steps;
#  2. an sCD student per entry of VARIANTS ("name=few_step.py flags;name=flags"; default "fast=", the config as it
#     is), each MINUTES (default 7) of distillation from that teacher, scored at 1, 2 and 4 steps at each guidance
#     scale of STUDENT_CFG (default "1 1.25 1.5": the students' sweep; the teacher's best scale, 1, is distilled in)
#     and at TRAJECTORY (default 4) checkpoints at each of those scales too, e.g. VARIANTS="new=;old=--set
#     objective.options.p_mean=-2.0 --set objective.options.p_std=1.6 --set optim.schedule=constant" (the config
#     before 2026-12-06 as "old");
#  3. with SCT=1: sCT from scratch for the teacher's 200 s + SCT_MINUTES (default MINUTES: the pair of that sCD
#     student), with SCT_SET's flags (e.g. "--set optim.schedule=constant"), named sct-SCT_VARIANT (default "fast");
#  4. the teacher again (GRID=0 skips): cfg 1.25 and 1.5 too, and each sampler and grid at NFE 1, 2, 4, 8 and 50;
#  5. with PROFILE=1: issue 19's sampling profile (results/2026-12-05-sampling-profile/profile.sh);
#  6. with E2E=1: issue 19's end-to-end targets as the issue states them: `liquidgen sample` of 10,000 MNIST samples at
#     50 steps with cfg 2, process start to file, for UNet-28 and LiquidGen-S (1-step runs of the shipped configs:
#     speed does not depend on training), from an empty compile cache and again from the cache it left, and 2-step
#     images per second inside the process (compiled and eager): part (1) of sampling_modes_device.sh; about 250 s.
# TEACH=0 skips stage 1 and SCD=0 stage 2 (e.g. sCT alone: TEACH=0 SCD=0 SCT=1 GRID=0).
# SET: few_step.py flags for every stage, teacher included, e.g. SET="--set model.options.time_scale=1000" (the
# time embedding of the configs before 2026-12-06), or SET="--backbone liquid": the LiquidGen-S pair (a flow teacher
# at its students' time_scale 1, few_step.py's teacher_overrides), e.g. with MINUTES=8 GRID=0 TRAJECTORY=0
# STUDENT_CFG="1 1.25" in two chained calls, then TEACH=0 SCD=0 GRID=1 for the teacher's grid (H100, 2026-12-07:
# 576 + 525 s, then about 300 s; results/2026-12-07-liquid-scd-h100). Next: its sCT, SET="--backbone liquid" TEACH=0
# SCD=0 GRID=0 SCT=1 SCT_MINUTES=8 (11.33 minutes of training: two chained calls).
# PAIR=1: issue 21's UNet-28 sCD / sCT pair on one card type, whichever half the lent card lacks (which card comes is
# known only once the call runs): on an H200, sCT alone for 200 s + 9 minutes (beside the H200 sCD student of
# results/2026-12-06-scd-lr-1e-4-h200); on any other card, the teacher and a 9-minute sCD student (beside the H100 sCT
# of results/2026-12-07-sct-constant-2e-4-h100). With GRID=0 TRAJECTORY=0 STUDENT_CFG="1 1.25": two chained calls.
# Device time: 30-360 s to start, 270 s for the teacher (none with TEACHER), per student MINUTES x 60 s and its
# compilation (H100, 2026-12-06: 160 s for the first student, 18 s for each later one, inductor's cache then warm;
# H200: 135 s), scoring about 80 s with TRAJECTORY 3 when the trajectory was at cfg 1 only (H100; H200 about 150 s),
# perhaps twice that now that it sweeps STUDENT_CFG, about 200 s for the teacher's grid (H200: 191 s), about 250 s
# for the profile, about 250 s for E2E.
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 TQDM_DISABLE=1
# DRY: few_step.py flags for a CPU dry run of the stages, e.g. DRY="--device cpu --samples 200 --batch 200
# --teacher-minutes 0.05" with MINUTES=0.05 (and O, R elsewhere)
O=${O:-/tmp/o}  # what comes back: records, logs, grids
R=${R:-/tmp/runs}  # run folders (checkpoints stay on the machine)
FS="python benchmarks/few_step.py --mnist-root .carry/data --runs $R --out $O/fs ${DRY:-} ${SET:-}"

T=${TEACHER:-$R/teacher}
CARRIED=${TEACHER:+--teacher-run $TEACHER}  # the teacher stages score a carried teacher instead of training one

stages() {
    # shellcheck disable=SC2086  # no flag, or the flag and its folder
    [ "${TEACH:-1}" = 0 ] || $FS teacher --cfg 1 --nfes 50 --teacher-samplers euler --teacher-cfg 1.0 $CARRIED \
        > $O/fs/teacher.log 2>&1
    IFS=';' read -ra variants <<< "${VARIANTS:-fast=}"
    [ "${SCD:-1}" = 1 ] || variants=()
    for entry in "${variants[@]}"; do
        # shellcheck disable=SC2086  # the flags split into words
        $FS scd --teacher-run "$T" --teacher-cfg 1.0 --distill-minutes "${MINUTES:-7}" \
            --variant "${entry%%=*}" ${entry#*=} --trajectory "${TRAJECTORY:-4}" \
            --student-cfg ${STUDENT_CFG:-1 1.25 1.5} > "$O/fs/scd-${entry%%=*}.log" 2>&1
    done
    # shellcheck disable=SC2086
    [ "${SCT:-0}" = 0 ] || $FS sct --teacher-minutes 3.3333 --distill-minutes "${SCT_MINUTES:-${MINUTES:-7}}" \
        --variant "${SCT_VARIANT:-fast}" \
        --trajectory "${TRAJECTORY:-4}" --student-cfg ${STUDENT_CFG:-1 1.25 1.5} ${SCT_SET:-} > $O/fs/sct.log 2>&1
    # shellcheck disable=SC2086
    [ "${GRID:-1}" = 0 ] || $FS teacher --cfg 1 1.25 1.5 --teacher-cfg 1.0 $CARRIED > $O/fs/teacher-grid.log 2>&1
    [ "${PROFILE:-0}" = 0 ] || P=$O/prof bash benchmarks/results/2026-12-05-sampling-profile/profile.sh
    # the 1-step runs are profile.sh's, when it ran first
    [ "${E2E:-0}" = 0 ] || OUT=$O/e2e CACHE=$R/e2e-cache E2E_ONLY=1 bash benchmarks/sampling_modes_device.sh \
        > $O/e2e.log 2>&1
    echo finished > $O/DONE
}

if [ "$1" = --stages ]; then
    stages
    exit
fi
mkdir -p $O/fs $O/prof
trap 'for m in $R/*/metrics.jsonl; do [ -f "$m" ] && cp "$m" "$O/fs/$(basename "$(dirname "$m")")-metrics.jsonl"; done
tar czf $OUT/all.tgz -C $O .
last=$(ls -d $R/teacher/checkpoints/step-* 2>/dev/null | tail -1)
[ -z "$TEACHER_BACK" ] || [ -z "$last" ] || tar czf - -C $R teacher/config.yaml teacher/metrics.jsonl \
    ${last#$R/}/ema.safetensors ${last#$R/}/model.json ${last#$R/}/config.json ${last#$R/}/state.json |
    split -b 15m -d - $OUT/teacher.tgz.' EXIT
if [ -z "$WAIT_ONLY" ]; then
    rm -f $O/DONE  # a warm machine's earlier stages finished; these have not
    nvidia-smi --query-gpu=name --format=csv,noheader > $O/device.txt 2>&1
    if [ -n "$PAIR" ] && grep -q H200 $O/device.txt; then
        export TEACH=0 SCD=0 SCT=1 SCT_MINUTES=9 SCT_VARIANT=constant-2e-4
    elif [ -n "$PAIR" ]; then
        export TEACH=1 SCD=1 SCT=0 MINUTES=9
    fi
    setsid bash "$0" --stages < /dev/null > $O/stages.log 2>&1 &
fi
for _ in $(seq "${WAIT:-570}"); do [ -f $O/DONE ] && break; sleep 1; done
cat $O/device.txt $O/stages.log
grep -ah "FD\|to train" $O/fs/*.log | tail -12
for m in $R/*/metrics.jsonl; do [ -f "$m" ] && echo "$m: $(tail -1 "$m" | cut -c1-200)"; done
cat $O/DONE $O/fs/few_step.md $O/fs/trajectory.md 2>/dev/null
tail -1 $O/prof/phases.log 2>/dev/null | cut -c1-600
sort -t'|' -k2 -n $O/prof/importtime-*.log 2>/dev/null | tail -6  # the slowest imports, cumulative
tail -n 7 $O/prof/model.log $O/prof/aot-*.log 2>/dev/null
cut -c1-400 $O/e2e/sampling.jsonl 2>/dev/null
