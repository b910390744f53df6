#!/usr/bin/env bash
# On the lent GPU machine (device tool, carry [".whl"]): the coates200 M=96 benchmark table (limit, in-process,
# 1 worker, 4 worker threads and processes with 2x2 tiles, PyTorch peers), float32 and bfloat16.
source bench/device_setup.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card.txt
timeout ${STEP200_S:-480} python3 bench/gpu_step.py --configs ${CONFIGS:-coates200} --minibatch ${MINIBATCH:-96} \
  --modes ${MODES:-limit,dasksae-1w,dasksae-4w-threads,torch,dasksae-4w} --dtypes ${DTYPES200:-float32,bfloat16} \
  --runs-4w 5 ${EXTRA} --json $OUT/gpu-step-${CONFIGS:-coates200}-m${MINIBATCH:-96}.json 2>&1 | filter | tee $OUT/gpu-step.log
true
