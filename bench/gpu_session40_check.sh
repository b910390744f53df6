#!/bin/bash
# Session 40's GPU checks (results in bench/results/session40/<part>/, each with its command.txt).
#   PART=first (about 400 s) tf32's one-term kernels with three changes that take their k-step from 92-119
#     instructions to about 62 (SASS from ptxas for sm_90): commit 4627e66 (the product summed straight into the running
#     sums, as cuBLAS's TF32 GEMM does), operands rounded by one integer add (CUTLASS's round_half_ulp_truncate) instead
#     of cvt.rna's two instructions, and the k-steps of a tile unrolled: the tf32 GPU tests at the default
#     DASKSAE_TF32_TENSOR_CORES=1, the limit and the tf32 and bfloat16 1-worker pipelined rows, then the tf32 row with
#     the kernels as they were before (BEFORE: a folder with session 39's mma_update.py, mma_forward.py and
#     mma_transpose.py, carried untracked) and again after, each in a process of its own on the same card, the tf32
#     kernel table and the float32 product and update floors with their one-term (tf32) rows.
#   PART=split (about 300 s) the split TF32 kernels (DASKSAE_FLOAT32_TENSOR_CORES=1) after their operands were split
#     by integer adds and a mask (the same values as cvt.rna) and the update's fragments loaded in pairs (tile loops
#     from 289-301 instructions a k-step to 209-243): their GPU tests (accuracy against the SIMT kernels, the update
#     against NumPy, float32 training), the float32 product and update floors (split and SIMT rows in one process),
#     then the in-process float32 step with the switch off and on, each in a process of its own.
#   PART=ratio (about 250 s) the tf32 rows in one process: the limit, the 1 worker pipelined and both PyTorch
#     peers (eager and torch.compile); then the tf32 GPU tests of test_gpu_tiled.py at the default.
source bench/device_setup.sh
card
tf32_row() {  # tf32_row LABEL: the tf32 1-worker pipelined row, in a process of its own
  timeout ${ONE_S:-70} python3 bench/gpu_step.py --configs coates200 --minibatch 96 --modes dasksae-1w --dtypes tf32 \
    --steps-per-task 10 --runs 20 --pipelined --json $OUT/gpu-step-tf32-$1.json 2>&1 | filter \
    | grep -v "  gemm\|cuda graphs" | sed "s/^/$1: /" | tee -a $OUT/gpu-step.log; }
case "${PART:-first}" in
first)
  gpu_tests ${TESTS_S:-60} tests/test_gpu.py -k "tf32"
  tail -5 $OUT/gpu-tests.log
  timeout ${ONE_S:-100} python3 bench/gpu_step.py --configs coates200 --minibatch 96 --modes limit,dasksae-1w \
    --dtypes tf32,bfloat16 --precisions tf32,bfloat16 --steps-per-task 10 --runs 20 --pipelined \
    --json $OUT/gpu-step-one-worker.json 2>&1 | filter | grep -v "  gemm\|cuda graphs" | tee -a $OUT/gpu-step.log
  if [ -d "${BEFORE:-}" ]; then
    mkdir -p /tmp/after && cp dasksae/kernels/mma_{update,forward,transpose}.py /tmp/after/
    cp $BEFORE/*.py dasksae/kernels/ && tf32_row before
    cp /tmp/after/*.py dasksae/kernels/ && tf32_row after
  fi
  timeout ${TABLE_S:-50} python3 bench/kernel_table.py --config coates200 --minibatch 96 --dtype tf32 --runs 3 \
    --top 40 --json $OUT/kernel-table-tf32.json 2>&1 | filter | head -60 > $OUT/kernel-table-tf32.log
  head -24 $OUT/kernel-table-tf32.log
  floors_float32 ;;
split)
  gpu_tests ${TESTS_S:-70} tests/test_gpu.py -k "split_tf32 or tf32_training"
  tail -5 $OUT/gpu-tests.log
  floors_float32
  in_process simt DASKSAE_FLOAT32_TENSOR_CORES=0
  in_process split DASKSAE_FLOAT32_TENSOR_CORES=1 ;;
ratio)
  timeout ${RATIO_S:-330} python3 bench/gpu_step.py --configs coates200 --minibatch 96 --modes limit,dasksae-1w,torch \
    --dtypes tf32 --precisions tf32 --steps-per-task 10 --runs 20 --pipelined --compile \
    --json $OUT/gpu-step-ratio-tf32.json 2>&1 | filter | grep -v "  gemm\|cuda graphs" | tee -a $OUT/gpu-step.log
  gpu_tests ${TESTS_S:-90} tests/test_gpu_tiled.py -k "tf32"
  tail -5 $OUT/gpu-tests.log ;;
esac
cd $OUT && tar czf ../results.tgz . && rm -f ./* && mv ../results.tgz .  # one file back
true
