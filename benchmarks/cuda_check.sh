#!/bin/bash
# The CUDA path end to end on one GPU: the GPU tests, the full `ddpm-cond` recipe trained under torchrun,
# 10,000 guided samples drawn on the GPU from that run and from the packaged model, each scored by `evaluate`.
#
#   bash benchmarks/cuda_check.sh [OUT_DIR] [extra train --set overrides...]
#
# Run from the repository root with the package importable (installed, or PYTHONPATH=src). Writes log.txt,
# metrics.jsonl and the evaluation JSONs to OUT_DIR (default: out/cuda_check). Results of one run are in
# benchmarks/results/cuda_check.md.
set -u
OUT=${1:-out/cuda_check}; shift || true
RUN=$OUT/run
mkdir -p "$OUT"; L=$OUT/log.txt; : > "$L"
say() { echo "=== $(date +%T) $*" | tee -a "$L"; }
sets=(); for s in "$@"; do sets+=(--set "$s"); done

say "GPU"; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee -a "$L"
python3 -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda)" | tee -a "$L"
say "tests"; python3 -m pytest -p no:cacheprovider tests/test_cuda.py -m gpu -q -rs 2>&1 | tail -5 | tee -a "$L"
say "train"; S=$SECONDS
python3 -m torch.distributed.run --nproc_per_node=1 --standalone -m mnist_diffusion train --recipe ddpm-cond \
  --device cuda --no-progress --no-samples --out "$RUN" "${sets[@]}" 2>&1 | tail -3 | tee -a "$L"
echo "train wall $((SECONDS - S)) s" | tee -a "$L"; cp "$RUN/metrics.jsonl" "$OUT/" 2>/dev/null
for model in "$RUN" ddpm-cond; do
  name=$(basename "$model"); say "sample $name"; S=$SECONDS
  python3 -m mnist_diffusion sample "$model" --device cuda --n 10000 --batch-size 1000 --out "$OUT/$name.png" \
    --npz "$OUT/$name.npz" 2>&1 | tail -1 | tee -a "$L"
  echo "sample wall $((SECONDS - S)) s (start-up included)" | tee -a "$L"
  say "evaluate $name"
  python3 -m mnist_diffusion evaluate "$OUT/$name.npz" --json "$OUT/eval_$name.json" 2>&1 | tail -14 | tee -a "$L"
done
say "end"
