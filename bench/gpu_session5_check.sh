#!/usr/bin/env bash
# On the lent GPU machine (device tool, carry [".whl"]), session 5, in three calls on one warm machine:
#   PART=tests  GPU tests, then a coates200 M=96 step by CUDA kernel (torch.profiler), float32 and bfloat16;
#   PART=table  the coates200 M=96 table in one run: limit, in-process, 1 worker (1 and 10 steps a task),
#               4 workers sharing the GPU as threads and as processes (10 steps a task), PyTorch float32 and bfloat16;
#   PART=host   where the host's time of a coates200 M=96 step goes (cProfile), 1x1 and 2x2 tiles in-process;
#   PART=threads  4 worker threads sharing the GPU, 2x2 tiles, at GIL switch intervals INTERVALS;
#   PART=compare  1 worker against MODES (default 4 worker threads), 10 steps a task, in one run;
#   PART=ab  4 worker threads with an earlier package (AB_OLD) and with this one, 1 worker and PyTorch, one call;
#   PART=overhead  coates96 M=512, 1 worker, 1 and 10 steps a task: the Dask overhead share and the time inside the task.
source bench/device_setup.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card.txt
case "${PART:-tests}" in
tests)
  timeout ${TESTS_S:-240} python3 -m pytest -m gpu -q -x -p no:cacheprovider -p no:logging tests/test_gpu.py tests/test_gpu_tiled.py 2>&1 | tail -15 | tee $OUT/gpu-tests.log
  for dtype in float32 bfloat16; do
    timeout 120 python3 bench/kernel_table.py --config coates200 --minibatch 96 --dtype $dtype --json $OUT/kernel-table-coates200-$dtype.json 2>&1 | grep -v "Warning\|warn_once" | tee -a $OUT/kernel-table.log
  done ;;
table)
  timeout 570 python3 bench/gpu_step.py --configs coates200 --minibatch 96 \
    --modes ${MODES:-limit,dasksae-1w,dasksae-4w-threads,torch,dasksae-4w} --dtypes float32,bfloat16 --precisions float32,bfloat16 \
    --steps-per-task 1,10 --steps-per-task-4w 10 --runs 20 --runs-4w 5 \
    --json $OUT/gpu-step-coates200-m96.json 2>&1 | filter | tee $OUT/gpu-step.log ;;
overhead)
  timeout 570 python3 bench/gpu_step.py --configs coates96 --minibatch 512 --modes dasksae-1w --dtypes float32,bfloat16 \
    --steps-per-task 1,10 --runs 20 --json $OUT/gpu-step-coates96-m512.json 2>&1 | filter | tee $OUT/gpu-step.log ;;
host)
  for dtype in float32 bfloat16; do
    timeout 200 python3 bench/host_overhead.py --config coates200 --minibatch 96 --dtype $dtype --tiles ${TILES:-1x1,2x2} \
      --json $OUT/host-overhead-coates200-$dtype.json 2>&1 | grep -v "Warning\|warn" | tee -a $OUT/host-overhead.log
  done ;;
threads)
  for interval in ${INTERVALS:-0.005 0.0005}; do
    echo "sys.setswitchinterval($interval)" | tee -a $OUT/gpu-step.log
    timeout 250 python3 bench/gpu_step.py --configs coates200 --minibatch 96 --modes dasksae-4w-threads --dtypes ${DTYPES:-float32,bfloat16} \
      --steps-per-task-4w 10 --runs 5 --runs-4w 5 --switch-interval $interval \
      --json $OUT/gpu-step-coates200-m96-threads-$interval.json 2>&1 | filter | tee -a $OUT/gpu-step.log
  done ;;
compare)
  timeout 560 python3 bench/gpu_step.py --configs coates200 --minibatch 96 --modes ${MODES:-dasksae-1w,dasksae-4w-threads} \
    --dtypes ${DTYPES:-float32,bfloat16} --precisions float32,bfloat16 --steps-per-task 10 --steps-per-task-4w 10 --runs ${RUNS:-10} --runs-4w 5 \
    --json $OUT/gpu-step-coates200-m96-compare.json 2>&1 | filter | tee $OUT/gpu-step.log ;;
ab)  # AB_OLD: a copy of an earlier dasksae package (untracked; e.g. git archive COMMIT dasksae | tar -x -C ab_old)
  PYTHONPATH=$PWD/${AB_OLD:-ab_old}:$PYTHONPATH timeout 250 python3 bench/gpu_step.py --configs coates200 --minibatch 96 \
    --modes dasksae-4w-threads --dtypes float32,bfloat16 --steps-per-task-4w 10 --runs 10 --runs-4w 5 \
    --json $OUT/gpu-step-coates200-m96-old.json 2>&1 | filter | sed 's/^/old: /' | tee $OUT/gpu-step-old.log
  timeout 330 python3 bench/gpu_step.py --configs coates200 --minibatch 96 --modes dasksae-1w,dasksae-4w-threads,torch \
    --dtypes float32,bfloat16 --precisions float32,bfloat16 --steps-per-task 10 --steps-per-task-4w 10 --runs 10 --runs-4w 5 \
    --json $OUT/gpu-step-coates200-m96-new.json 2>&1 | filter | tee $OUT/gpu-step.log ;;
esac
true
