#!/usr/bin/env bash
# On the lent GPU machine (device tool, carry [".whl", "ab_old"]), session 6:
#   PART=first  GPU tests, then in-process coates200 M=96 steps of an earlier package (AB_OLD, a copy made with
#               `git archive COMMIT dasksae | tar -x -C ab_old`) and of this one, then this one's step by CUDA kernel;
#   PART=table  the GPU tests, then the coates200 M=96 table: limit, in-process, 1 worker (10 steps a task),
#               4 worker threads, PyTorch; then the float32 step by CUDA kernel;
#   PART=overhead  coates96 M=512, 1 worker, 10 steps a task: the Dask overhead share, with a Dask performance
#               report of each dasksae row (carry ".whl-dashboard" too: bokeh);
#   PART=train  `dasksae train --gpu --profile` (carry ".whl-dashboard" too).
source bench/device_setup.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card.txt
case "${PART:-first}" in
first)
  timeout ${TESTS_S:-300} python3 -m pytest -m gpu -q -p no:cacheprovider -p no:logging tests/test_gpu.py tests/test_gpu_tiled.py 2>&1 | tail -25 | tee $OUT/gpu-tests.log
  PYTHONPATH=$PWD/${AB_OLD:-ab_old}:$PYTHONPATH timeout 200 python3 bench/gpu_step.py --configs coates200 --minibatch 96 \
    --modes limit,dasksae-in-process --dtypes float32,bfloat16 --runs 20 \
    --json $OUT/gpu-step-coates200-m96-old.json 2>&1 | filter | sed 's/^/old: /' | tee $OUT/gpu-step.log
  timeout 200 python3 bench/gpu_step.py --configs coates200 --minibatch 96 --modes limit,dasksae-in-process --dtypes float32,bfloat16 \
    --runs 20 --json $OUT/gpu-step-coates200-m96-new.json 2>&1 | filter | tee -a $OUT/gpu-step.log
  for dtype in float32 bfloat16; do
    timeout 120 python3 bench/kernel_table.py --config coates200 --minibatch 96 --dtype $dtype --json $OUT/kernel-table-coates200-$dtype.json 2>&1 | grep -v "Warning\|warn_once" | tee -a $OUT/kernel-table.log
  done ;;
table)
  timeout ${TESTS_S:-120} python3 -m pytest -m gpu -q -p no:cacheprovider -p no:logging tests/test_gpu.py tests/test_gpu_tiled.py 2>&1 | tail -5 | tee $OUT/gpu-tests.log
  timeout ${TORCH_S:-110} python3 bench/gpu_step.py --configs coates200 --minibatch 96 --modes limit,torch \
    --precisions float32,bfloat16 --runs 20 --json $OUT/gpu-step-coates200-m96-torch.json 2>&1 | filter | tee $OUT/gpu-step.log
  timeout ${TABLE_S:-300} python3 bench/gpu_step.py --configs coates200 --minibatch 96 \
    --modes ${MODES:-dasksae-1w,dasksae-4w-threads} --dtypes float32,bfloat16 \
    --steps-per-task 10 --steps-per-task-4w 10 --runs 20 --runs-4w 5 \
    --json $OUT/gpu-step-coates200-m96.json 2>&1 | filter | tee -a $OUT/gpu-step.log
  timeout 50 python3 bench/kernel_table.py --config coates200 --minibatch 96 --dtype float32 --json $OUT/kernel-table-coates200-float32.json 2>&1 | grep -v "Warning\|warn_once" | head -30 | tee $OUT/kernel-table.log ;;
overhead)
  WHEELS=.whl-dashboard source bench/device_setup.sh
  timeout 400 python3 bench/gpu_step.py --configs coates96 --minibatch 512 --modes dasksae-1w --dtypes float32,bfloat16 \
    --steps-per-task 10 --runs 20 --profile $OUT/report --json $OUT/gpu-step-coates96-m512.json 2>&1 | filter | tee $OUT/gpu-step.log
  timeout 150 python3 -m dasksae.cli train --gpu --config coates1.8b --tiles 1x1 --minibatch 96 --dtype bfloat16 --steps 40 \
    --out /tmp/run --profile $OUT/train-report.html 2>&1 | filter | tail -12 | tee $OUT/train.log ;;
train)  # dasksae train --gpu --profile on the card (no --out: the end-of-run checkpoint of 1.8B parameters takes minutes)
  WHEELS=.whl-dashboard source bench/device_setup.sh >/dev/null 2>&1
  timeout 200 python3 -m dasksae.cli train --gpu --config coates1.8b --tiles 1x1 --minibatch 96 --dtype bfloat16 --steps 100 \
    --profile $OUT/train-report.html 2>&1 | filter | tr '\r' '\n' | tail -4 | tee $OUT/train.log ;;
esac
true
