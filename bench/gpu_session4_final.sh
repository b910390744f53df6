#!/usr/bin/env bash
# On the lent H100 (device tool, carry [".whl"]), one visit: GPU tests; a coates200 M=96 step by CUDA kernel
# (float32, bfloat16); the coates200 M=96 table (in process, 1 worker with 1 and 10 steps a task, PyTorch peers);
# the Dask overhead at M=512 (coates96, 1 worker, 1 and 10 steps a task).
source bench/device_setup.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card.txt
timeout 100 python3 -m pytest -m gpu -q -x -p no:cacheprovider -p no:logging tests/test_gpu.py tests/test_gpu_tiled.py 2>&1 | tail -15 | tee $OUT/gpu-tests.log
for dtype in float32 bfloat16; do
  timeout 70 python3 bench/kernel_table.py --config coates200 --minibatch 96 --dtype $dtype --json $OUT/kernel-table-coates200-$dtype.json 2>&1 | grep -v Warning | tee -a $OUT/kernel-table.log
done
timeout 220 python3 bench/gpu_step.py --configs coates200 --minibatch 96 --modes limit,dasksae-1w,torch --dtypes float32,bfloat16 \
  --precisions float32,bfloat16 --steps-per-task 1,10 --runs 10 --warmup-runs 2 --json $OUT/gpu-step-coates200-m96.json 2>&1 | filter | tee $OUT/gpu-step.log
timeout 100 python3 bench/gpu_step.py --configs coates96 --minibatch 512 --modes dasksae-1w --dtypes float32,bfloat16 \
  --steps-per-task 1,10 --runs 10 --warmup-runs 2 --json $OUT/gpu-step-coates96-m512.json 2>&1 | filter | tee -a $OUT/gpu-step.log
true
