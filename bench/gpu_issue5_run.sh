#!/usr/bin/env bash
# On the lent GPU machine (device tool, carry [".whl"]): the measurements behind README "On the GPU":
# GPU tests; where the step's time goes (1x1 in float32 and bfloat16, 2x2 serial in float32); the benchmark
# of coates200 at M=96 (all precisions; 1 worker, 4 worker processes, 4 worker threads; PyTorch peers) and
# of coates96 at M=512 (1 and 10 steps per task).  Wheels in .whl: see bench/gpu_check.sh.
source bench/device_setup.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card.txt
timeout 100 python3 -m pytest -m gpu -q -x -p no:cacheprovider -p no:logging tests/test_gpu.py tests/test_gpu_tiled.py 2>&1 | tail -25 | tee $OUT/gpu-tests.log
for run in "1x1 float32" "1x1 bfloat16" "2x2 float32"; do
  set -- $run
  timeout 60 python3 bench/profile_step.py --config coates200 --minibatch 96 --tiles $1 --dtype $2 --json $OUT/profile-step-coates200-$1-$2.json 2>&1 | tee -a $OUT/profile-step.log
done
timeout ${STEP200_S:-260} python3 bench/gpu_step.py --configs coates200 --minibatch 96 --modes limit,dasksae-1w,dasksae-4w,dasksae-4w-threads,torch --dtypes ${DTYPES200:-float32,tf32,bfloat16} --runs-4w 5 --json $OUT/gpu-step-coates200-m96.json 2>&1 | filter | tee $OUT/gpu-step.log
timeout ${STEP96_S:-110} python3 bench/gpu_step.py --configs coates96 --minibatch 512 --modes limit,dasksae-1w,torch --dtypes float32,bfloat16 --steps-per-task 1,10 --runs 10 --json $OUT/gpu-step-coates96-m512.json 2>&1 | filter | tee -a $OUT/gpu-step.log
true
