#!/usr/bin/env bash
# On the lent GPU machine (device tool, carry [".whl"]): GPU tests; where a coates200 step's time goes
# (1x1, float32 and bfloat16); the benchmark of coates200 at M=96 (float32 and bfloat16; 1 worker, 4 worker
# threads, 4 worker processes over TCP; PyTorch peers in float32, tf32 and bfloat16).
source bench/device_setup.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card.txt
timeout 100 python3 -m pytest -m gpu -q -x -p no:cacheprovider -p no:logging tests/test_gpu.py tests/test_gpu_tiled.py 2>&1 | tail -25 | tee $OUT/gpu-tests.log
for run in ${PROFILES:-"1x1 float32" "1x1 bfloat16"}; do
  set -- $run
  timeout 60 python3 bench/profile_step.py --config coates200 --minibatch 96 --tiles $1 --dtype $2 --json $OUT/profile-step-coates200-$1-$2.json 2>&1 | tee -a $OUT/profile-step.log
done
timeout ${STEP200_S:-300} python3 bench/gpu_step.py --configs coates200 --minibatch 96 --modes ${MODES:-limit,dasksae-1w,dasksae-4w-threads,dasksae-4w,torch} --dtypes ${DTYPES200:-float32,bfloat16} --runs-4w 5 --json $OUT/gpu-step-coates200-m96.json 2>&1 | filter | tee $OUT/gpu-step.log
true
