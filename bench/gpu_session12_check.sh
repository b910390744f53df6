#!/usr/bin/env bash
# On the lent GPU machine (device tool, carry [".whl"]), session 12. The table with the defaults is
# `PART=table` of bench/gpu_session11_check.sh (bench/results/session12/table/).
#   PART=diag   where the time goes now, for the targets still missed: the GPU time of a one-tile coates200 step by
#               kernel (M=96, float32 then bfloat16: the kernel tables of the README dated from sessions 5 and 6), then
#               4 worker threads in bfloat16 with their Python stacks sampled (the host-bound step).
#   PART=check  the GPU tests, then the rows this session's changes aim at (in one process).
source bench/device_setup.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card.txt
case "${PART:-diag}" in
diag)
  for dtype in float32 bfloat16; do
    timeout 100 python3 bench/kernel_table.py --config coates200 --minibatch 96 --dtype $dtype --runs 3 \
      --json $OUT/kernel-table-coates200-$dtype-1w.json 2>&1 | filter | tee -a $OUT/kernel-table.log
  done
  timeout 200 python3 bench/gpu_step.py --configs coates200 --minibatch 96 --modes dasksae-4w-threads --sample-host \
    --dtypes bfloat16 --steps-per-task-4w 10 --runs-4w 5 --runs 3 --warmup-runs 1 --json $OUT/gpu-step-4w-sampled.json 2>&1 \
    | filter | grep -v "  gemm" | tee -a $OUT/gpu-step.log ;;
esac
true
