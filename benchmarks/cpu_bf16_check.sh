#!/bin/bash
# The bf16 CPU figures in one go, for a machine whose CPU has AMX (or any other one to compare): which numerics
# `auto` picks and why, sampling in fp32 / bf16 / bf16 compiled with FID@2000 on the same seeds, training
# speed in every variant, NCHW against channels_last (what `train.channels_last=auto` picks), the bf16 decoder,
# where the time goes by operator, and OpenMP's waiting. Each benchmark writes its own results file, named
# after the processor's kind (amx, avx512bf16, avx2), with the command and the machine in it.
#
#   bash benchmarks/cpu_bf16_check.sh [--quick]   # --quick: speed only (no FID@2000 check, which is long)
#
# Run from the repository root with the package importable (`make setup`, then `.venv/bin/python` or activate).
set -u
PY=${PYTHON:-python3}
quick=${1:-}
flags=$(grep -o 'amx_bf16\|avx512_bf16' /proc/cpuinfo | sort -u | paste -sd ' ')
case "$flags" in *amx_bf16*) kind=amx ;; *avx512_bf16*) kind=avx512bf16 ;; *) kind=avx2 ;; esac
R=benchmarks/results
say() { echo "=== $(date +%T) $*"; }
say "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2) (${flags:-no bf16 units}) -> files *_$kind.md"
$PY -c "import mnist_diffusion; from mnist_diffusion.precision import resolve_precision; \
print(resolve_precision('auto', 'cpu', 'sample'))"
n=2000; [ "$quick" = "--quick" ] && n=0
say "sampling"; $PY benchmarks/compiled_sampling.py --n $n --repeats 5 --batch-sizes ldm:256 \
  --out $R/compiled_sampling_$kind.md
say "training"; $PY benchmarks/compiled_training.py --out $R/compiled_training_$kind.md
say "training layout"; $PY benchmarks/train_layout.py --precisions fp32 bf16 --out $R/train_layout_$kind.md
say "decoder"; $PY benchmarks/latent_decode.py --out $R/latent_decode_$kind.md
say "operators"; $PY benchmarks/profile_ops.py --out $R/profile_ops_$kind.md
say "OpenMP waiting"; $PY benchmarks/omp_wait.py --busy 0 1 --spins 0 3000 --rounds 2 \
  --workloads "ldm fp32" "ldm bf16" "train ddpm-cond bf16" "ldm bf16 one digit" --out $R/omp_wait_$kind.md
say "done"
