#!/usr/bin/env bash
# On the lent H100 (device tool, carry [".whl"]): one run for the README's GPU table and the scaling check:
# coates200 M=96 float32 with 1, 2, 4 and 8 worker processes sharing the GPU (TCP, SPMD); tf32 on 1 worker;
# coates96 M=96 in-process (the scaling model's compute fit); coates96 M=512 with 1 and 10 steps per task
# and the PyTorch peers.
source bench/device_setup.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card.txt
timeout 190 python3 bench/gpu_step.py --configs coates200 --minibatch 96 --modes limit,dasksae-1w,dasksae-2w,dasksae-4w,dasksae-8w --dtypes float32 --runs-4w 5 --json $OUT/gpu-step-coates200-workers.json 2>&1 | filter | tee $OUT/gpu-step.log
timeout 70 python3 bench/gpu_step.py --configs coates200 --minibatch 96 --modes dasksae-1w --dtypes tf32 --json $OUT/gpu-step-coates200-tf32.json 2>&1 | filter | tee -a $OUT/gpu-step.log
timeout 40 python3 bench/gpu_step.py --configs coates96 --minibatch 96 --modes limit,dasksae-1w --dtypes float32 --json $OUT/gpu-step-coates96-m96.json 2>&1 | filter | tee -a $OUT/gpu-step.log
timeout 130 python3 bench/gpu_step.py --configs coates96 --minibatch 512 --modes limit,dasksae-1w,torch --dtypes float32,bfloat16 --precisions float32,bfloat16 --steps-per-task 1,10 --runs 10 --json $OUT/gpu-step-coates96-m512.json 2>&1 | filter | tee -a $OUT/gpu-step.log
true
