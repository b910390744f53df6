#!/bin/bash
# Session 38's GPU checks (results in bench/results/session38/<part>/, each with its command.txt).  The session's
# first calls ran session 37's PART=float32, session 36's PART=geometry and session 37's PART=whole (with
# DASKSAE_MMA_GEOMETRY=1) from their scripts.
#   PART=accuracy  (about 150 s) the split-TF32 kernels with split_mma's partial sums (the three products of a k-step
#     summed from zero, then added to the running sums rounded to nearest: on the H100 the tensor cores' truncating
#     sums fed the running sums made W x 14x and W^T y 8x the SIMT kernels' error, session38/float32/):
#     1. their GPU tests, the whole products' and the layers compiled in (DASKSAE_MMA_GEOMETRY, the default now);
#     2. bench/product_floor.py --precision float32 and bench/update_floor.py --precision float32 (their speed
#        with the partial sums and the lean k-step).
#     With them, the GPU test of DASKSAE_TF32_TENSOR_CORES=1 (tf32 on the same kernels with one TF32 product a k-step).
#   PART=tf32  (about 400 s) the tf32 rows, never in its table since session 12: the tf32 limit, dasksae's 1
#     worker pipelined (DASKSAE_TF32_TENSOR_CORES=0: tf32 products by cuBLAS over gathered fields, the update apart)
#     and both PyTorch peers in tf32 (eager and torch.compile, TF32 matmuls), in one process: whether "5x the PyTorch
#     implementation in each dtype" holds for tf32; then the 1 worker with DASKSAE_TF32_TENSOR_CORES=1 in a process
#     of its own.
source bench/device_setup.sh
card
case "${PART:-accuracy}" in
accuracy)
  gpu_tests ${TESTS_S:-90} tests/test_gpu.py \
    -k "split_tf32 or float32_training_with_the_split or whole_products or layers_compiled_in or tf32_training_on"
  cat $OUT/gpu-tests.log
  timeout ${PRODUCT_S:-45} python3 bench/product_floor.py --precision float32 --config coates200 --minibatch 96 \
    --runs 5 --json $OUT/product-floor-float32.json 2>&1 | filter | tee $OUT/product-floor.log
  timeout ${FLOOR_S:-45} python3 bench/update_floor.py --precision float32 --config coates200 --minibatch 96 \
    --runs 5 --json $OUT/update-floor-float32.json 2>&1 | filter | tee $OUT/update-floor.log ;;
tf32)
  timeout ${RATIO_S:-330} python3 bench/gpu_step.py --configs coates200 --minibatch 96 --modes limit,dasksae-1w,torch \
    --dtypes tf32 --precisions tf32 --steps-per-task 10 --runs 20 --pipelined --compile \
    --json $OUT/gpu-step-ratio-tf32.json 2>&1 | filter | grep -v "  gemm\|cuda graphs" | tee -a $OUT/gpu-step.log
  DASKSAE_TF32_TENSOR_CORES=1 timeout ${ONE_S:-90} python3 bench/gpu_step.py --configs coates200 --minibatch 96 \
    --modes dasksae-1w --dtypes tf32 --steps-per-task 10 --runs 20 --pipelined --json $OUT/gpu-step-tf32-tensor-cores.json \
    2>&1 | filter | grep -v "  gemm\|cuda graphs" | sed "s/^/tensor cores: /" | tee -a $OUT/gpu-step.log ;;
esac
cd $OUT && tar czf ../results.tgz . && rm -f ./* && mv ../results.tgz .  # one file back
true
