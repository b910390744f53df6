#!/usr/bin/env bash
# On the lent GPU machine (device tool, carry [".whl"]), session 12. The table with the defaults is
# `PART=table` of bench/gpu_session11_check.sh (bench/results/session12/table/).
#   PART=diag   where the time goes now, for the targets still missed: the GPU time of a one-tile coates200 step by
#               kernel (M=96, float32 then bfloat16: the kernel tables of the README dated from sessions 5 and 6), then
#               4 worker threads in bfloat16 with their Python stacks sampled (the host-bound step).
#   PART=check  the batched copies of sends and receipts: GPU tests, then 4 worker threads with and without them.
#   PART=sampled  the 4 threads' host samples with the batched copies.
#   PART=lend   graph-run values lent to the threads that read them, against copied out: all GPU tests, 4 threads.
#               Ran at b46a696; lending was reverted after it (no gain: 39.9 against 40.1 ms; a graph pool kept
#               0.8 MB after its release), so DASKSAE_GRAPH_SENDS no longer exists.
#   PART=next   all GPU tests, the 4 threads' bfloat16 step one task at a time and pipelined (--pipelined), then
#               1 worker and 4 threads pipelined.
#   PART=table4w  the 4 threads' kernel table (device or host?).
source bench/device_setup.sh
card
case "${PART:-diag}" in
diag)
  for dtype in float32 bfloat16; do
    timeout 100 python3 bench/kernel_table.py --config coates200 --minibatch 96 --dtype $dtype --runs 3 \
      --json $OUT/kernel-table-coates200-$dtype-1w.json 2>&1 | filter | tee -a $OUT/kernel-table.log
  done
  timeout 200 python3 bench/gpu_step.py --configs coates200 --minibatch 96 --modes dasksae-4w-threads --sample-host \
    --dtypes bfloat16 --steps-per-task-4w 10 --runs-4w 5 --runs 3 --warmup-runs 1 --json $OUT/gpu-step-4w-sampled.json 2>&1 \
    | filter | grep -v "  gemm" | tee -a $OUT/gpu-step.log ;;
check)
  # the sends after a graph run copied out in one launch with one event, and each receipt's staged copies in one
  # launch (dasksae/kernels/copies.py): its GPU test and those of worker threads and CUDA graphs, then 4 worker
  # threads in bfloat16 with it, without it (the package as of efaa516, exported to ab_old/ before the call, not
  # committed), and with it and a GIL switch interval of 0.5 ms; float32 with it last
  timeout 120 python3 -m pytest -m gpu -q -p no:cacheprovider -p no:logging --tb=short tests/test_gpu_tiled.py tests/test_gpu.py \
    -k "copy_arrays or equals_cpu or cuda_graphs or threads" 2>&1 | tail -15 | tee $OUT/gpu-tests.log
  four batched bfloat16
  [ -d ab_old/dasksae ] && PYTHONPATH=$PWD/ab_old:$PYTHONPATH four before bfloat16
  four batched-switch-0.5ms bfloat16 --switch-interval 0.0005
  four batched-float32 float32 ;;
sampled)
  # where the 4 worker threads' host time goes with the batched copies (bfloat16)
  timeout 150 python3 bench/gpu_step.py --configs coates200 --minibatch 96 --modes dasksae-4w-threads --sample-host \
    --dtypes bfloat16 --steps-per-task-4w 10 --runs-4w 5 --runs 3 --warmup-runs 1 --json $OUT/gpu-step-4w-sampled.json 2>&1 \
    | filter | grep -v "  gemm" | tee -a $OUT/gpu-step.log ;;
lend)
  # values of graph runs lent to the worker threads that read them (DASKSAE_GRAPH_SENDS=lend, the default) against
  # copied out in one launch a batch (copy, PART=check's code): all GPU tests, then 4 worker threads in bfloat16
  # with each, then float32 with lend
  timeout ${TESTS_S:-130} python3 -m pytest -m gpu -q -p no:cacheprovider -p no:logging --tb=short tests/test_gpu.py tests/test_gpu_tiled.py 2>&1 | tail -20 | tee $OUT/gpu-tests.log
  four lend bfloat16
  DASKSAE_GRAPH_SENDS=copy four copy bfloat16
  four lend-float32 float32 ;;
next)
  # the first call of session 13 (the 600 s limit of one call: the 4 threads' kernel table moved to PART=table4w):
  # all GPU tests at the final code (the batched copy gained a same-device check after the last GPU run), then the
  # 4-thread bfloat16 step one task at a time and with the groups of steps pipelined as dasksae train now runs
  # them (bench/gpu_step.py --pipelined): inside a tile's task that step was 38.1-39.8 ms against 39.9-41.8 ms
  # measured from the client; then 1 worker pipelined in both dtypes, and 4 threads pipelined in float32
  timeout ${TESTS_S:-100} python3 -m pytest -m gpu -q -p no:cacheprovider -p no:logging --tb=short tests/test_gpu.py tests/test_gpu_tiled.py 2>&1 | tail -20 | tee $OUT/gpu-tests.log
  FOUR_S=110 four batched bfloat16
  FOUR_S=110 four pipelined bfloat16 --pipelined
  timeout 190 python3 bench/gpu_step.py --configs coates200 --minibatch 96 --modes dasksae-1w,dasksae-4w-threads \
    --dtypes bfloat16,float32 --steps-per-task 10 --steps-per-task-4w 10 --runs 20 --runs-4w 5 --pipelined \
    --json $OUT/gpu-step-pipelined.json 2>&1 | filter | grep -v "  gemm\|cuda graphs" | tee -a $OUT/gpu-step.log ;;
table4w)
  # how much of the 4-thread bfloat16 step is the device: the GPU's busy time against the wall (kernel table of 4
  # worker threads)
  timeout 150 python3 bench/kernel_table.py --config coates200 --minibatch 96 --dtype bfloat16 --tiles 2x2 --workers 4 \
    --runs 2 --json $OUT/kernel-table-coates200-bfloat16-4w.json 2>&1 | filter | tee $OUT/kernel-table.log ;;
esac
true
