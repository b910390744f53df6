#!/bin/bash
# Session 39's GPU checks (results in bench/results/session39/<part>/, each with its command.txt).  None of these
# parts ran: after the session's first two calls every start was refused.  Those calls ran session 38's
# PART=accuracy and PART=tf32 (session39/accuracy/, session39/tf32/): the split kernels' accuracy tests passed, and
# DASKSAE_TF32_TENSOR_CORES=1 took the 1-worker tf32 step from 48.4 to 36.7 ms (the default since).
#   PART=next  (about 450 s) 1. the bfloat16 rows with the layers compiled in (DASKSAE_MMA_GEOMETRY=1, the
#     default since session 38): the limit, the 1 worker pipelined and both PyTorch peers, in one process;
#     2. the tf32 GPU tests at the new default (with commit 4627e66 cherry-picked: one-term split_mma summing
#     into the running sums as cuBLAS's TF32 GEMM does, no partial sums; reverted in 82f96d3, never run on a GPU);
#     3. the tf32 1 worker and its kernel table of the one-tile step (where tf32's 36.7 ms goes: 5x the compiled
#     peer's 167.9 ms needs 33.6 ms); 4. the float32 product and update floors with their one-term (tf32) rows.
source bench/device_setup.sh
card
case "${PART:-next}" in
next)
  timeout ${RATIO_S:-300} python3 bench/gpu_step.py --configs coates200 --minibatch 96 --modes limit,dasksae-1w,torch \
    --dtypes bfloat16 --precisions bfloat16 --steps-per-task 10 --runs 20 --pipelined --compile \
    --json $OUT/gpu-step-ratio-bfloat16.json 2>&1 | filter | grep -v "  gemm\|cuda graphs" | tee -a $OUT/gpu-step.log
  gpu_tests ${TESTS_S:-60} tests/test_gpu.py -k "tf32"
  timeout ${TABLE_S:-60} python3 bench/kernel_table.py --config coates200 --minibatch 96 --dtype tf32 --runs 3 \
    --top 40 --json $OUT/kernel-table-tf32.json 2>&1 | filter | head -60 > $OUT/kernel-table-tf32.log
  head -30 $OUT/kernel-table-tf32.log
  timeout ${ONE_S:-90} python3 bench/gpu_step.py --configs coates200 --minibatch 96 --modes dasksae-1w --dtypes tf32 \
    --steps-per-task 10 --runs 20 --pipelined --json $OUT/gpu-step-tf32.json 2>&1 | filter \
    | grep -v "  gemm\|cuda graphs" | sed "s/^/tf32: /" | tee -a $OUT/gpu-step.log
  timeout ${PRODUCT_S:-45} python3 bench/product_floor.py --precision float32 --config coates200 --minibatch 96 \
    --runs 5 --json $OUT/product-floor-float32.json 2>&1 | filter | tee $OUT/product-floor.log
  timeout ${FLOOR_S:-50} python3 bench/update_floor.py --precision float32 --config coates200 --minibatch 96 \
    --runs 5 --json $OUT/update-floor-float32.json 2>&1 | filter | tee $OUT/update-floor.log ;;
slim)  # (about 300 s) what PART=next measures, without the PyTorch peers (session 34 ran them on the H100) and in the
  # order of their worth: the tf32 tests, the tf32 and bfloat16 1-worker rows, the tf32 kernel table, the floors
  gpu_tests ${TESTS_S:-60} tests/test_gpu.py -k "tf32"
  cat $OUT/gpu-tests.log | tail -5
  timeout ${ONE_S:-90} python3 bench/gpu_step.py --configs coates200 --minibatch 96 --modes limit,dasksae-1w \
    --dtypes tf32,bfloat16 --precisions tf32,bfloat16 --steps-per-task 10 --runs 20 --pipelined \
    --json $OUT/gpu-step-one-worker.json 2>&1 | filter | grep -v "  gemm\|cuda graphs" | tee -a $OUT/gpu-step.log
  timeout ${TABLE_S:-50} python3 bench/kernel_table.py --config coates200 --minibatch 96 --dtype tf32 --runs 3 \
    --top 40 --json $OUT/kernel-table-tf32.json 2>&1 | filter | head -60 > $OUT/kernel-table-tf32.log
  head -24 $OUT/kernel-table-tf32.log
  floors_float32 ;;
tiny)  # (about 120 s, for the session's last device time) the tf32 tests, then the tf32 and bfloat16 1-worker rows
  gpu_tests ${TESTS_S:-45} tests/test_gpu.py -k "tf32"
  timeout ${ONE_S:-100} python3 bench/gpu_step.py --configs coates200 --minibatch 96 --modes dasksae-1w \
    --dtypes tf32,bfloat16 --steps-per-task 10 --runs 20 --pipelined \
    --json $OUT/gpu-step-one-worker.json 2>&1 | filter | grep -v "  gemm\|cuda graphs" | tee -a $OUT/gpu-step.log ;;
esac
cd $OUT && tar czf ../results.tgz . && rm -f ./* && mv ../results.tgz .  # one file back
true
