#!/bin/bash
# Session 37's GPU checks (results in bench/results/session37/<part>/, each with its command.txt).  Session 37 had no
# device (none was lent); these are ready for the next call.
#   PART=float32  (about 400 s) DASKSAE_FLOAT32_TENSOR_CORES=1: float32 W x, U g_r, W^T y with the fold and the weight
#     gradient with the update on TF32 tensor cores with split operands (kernels/mma_float32.py, "3xTF32"):
#     1. their GPU tests: W x's and W^T y's errors against float64 within 3x of the SIMT kernels' on a coates-like
#        layer (plain TF32's more than 20x), the g++ tests' cases, the update against NumPy, and small's float32
#        training with them as with the SIMT kernels;
#     2. bench/product_floor.py --precision float32: the SIMT W x and W^T y (product, then the fold) against the
#        split-TF32 ones, and a read of the float32 weights, every stage of coates200 (M=96);
#     3. bench/update_floor.py --precision float32: the SIMT fused update against the split-TF32 one (rows-wide, the
#        default, and rows), and the copy;
#     4. the in-process float32 coates200 step with the switch off and on, in turn, twice;
#     5. the float32 kernel table of the in-process step with it on.
#   PART=ratio32  (about 240 s) the float32 rows with both PyTorch peers in one process (the limit, the 1 worker
#     pipelined, eager and torch.compile), with DASKSAE_FLOAT32_TENSOR_CORES=1 (RATIO_SWITCH=0: without), as session
#     34's PART=ratio32: whether float32 reaches 5x the compiled peer.
#   PART=whole  (about 250 s) DASKSAE_WHOLE_PRODUCTS=1, a layer's W x and W^T y with the fold in one launch where their
#     kernels write no transients (coates200's stage 2: W x 2 launches, W^T y 3, the last of one block row; stage 1's
#     W^T y 2, the last of one block row): its GPU test, then the in-process step off and on, in turn, twice, in
#     bfloat16 and in float32.
#   PART=geometry  session 36's (bench/gpu_session36_check.sh: DASKSAE_MMA_GEOMETRY=1 and DASKSAE_MMA_LDMATRIX=1,
#     built in session 36 and still unmeasured), run from there: PART=geometry bash bench/gpu_session36_check.sh
source bench/device_setup.sh
card
case "${PART:-float32}" in
float32)
  gpu_tests ${TESTS_S:-150} tests/test_gpu.py -k "split_tf32 or float32_training_with_the_split"
  timeout ${PRODUCT_S:-90} python3 bench/product_floor.py --precision float32 --config coates200 --minibatch 96 \
    --runs 10 --json $OUT/product-floor-float32.json 2>&1 | filter | tee $OUT/product-floor.log
  timeout ${FLOOR_S:-90} python3 bench/update_floor.py --precision float32 --config coates200 --minibatch 96 \
    --runs 10 --json $OUT/update-floor-float32.json 2>&1 | filter | tee $OUT/update-floor.log
  for round in 1 2; do
    in_process simt DASKSAE_FLOAT32_TENSOR_CORES=0
    in_process 3xtf32 DASKSAE_FLOAT32_TENSOR_CORES=1
  done
  kernel_table_float32 ${TABLE_S:-100} DASKSAE_FLOAT32_TENSOR_CORES=1 ;;
whole)
  gpu_tests ${TESTS_S:-90} tests/test_gpu.py -k "whole_products"
  for dtype in bfloat16 float32; do
    for round in 1 2; do
      STEP_DTYPE=$dtype in_process chunked-$dtype DASKSAE_WHOLE_PRODUCTS=0
      STEP_DTYPE=$dtype in_process whole-$dtype DASKSAE_WHOLE_PRODUCTS=1
    done
  done ;;
ratio32)
  DASKSAE_FLOAT32_TENSOR_CORES=${RATIO_SWITCH:-1} ratio_float32 ${RATIO_S:-330} --pipelined --compile ;;
esac
cd $OUT && tar czf ../results.tgz . && rm -f ./* && mv ../results.tgz .  # one file back
true
