#!/bin/bash
# Session 49's GPU checks (results in bench/results/session49/<part>/, each with its command.txt).
#   PART=first (about 560 s): float32 W x and U g_r on wgmma (mma_forward's w32-split, built in session 48 and not
#     yet run on a GPU; w32-split-2, its two-stage form) and float32 W^T y on wgmma (mma_transpose's w32-split-2,
#     DASKSAE_FLOAT32_WGMMA_TRANSPOSE=1; session 49): their GPU accuracy tests and the float32 training tests (the
#     wgmma update's training test in its string-switch form), the in-process float32 step in four settings (each in a
#     process of its own), then the float32 rows (ratio_float32) at the fastest, with the eager PyTorch peer
#     only (as it ran: --compile left out, so no compiled peer)
#   PART=second (about 430 s): the float32 product and update floors with the wgmma rows, the in-process float32 step
#     with W^T y on wgmma at every stage (DASKSAE_FLOAT32_WGMMA_TRANSPOSE=all) and at the cells of 128 (=1), the W x
#     variant FORWARD32 (default w32-split-2), the in-process bfloat16 step at the defaults, the tiled GPU tests at the
#     defaults (cut at 80 s in session 48), then the bfloat16 1-worker pipelined row
#   PART=third (about 480 s): W x, U g_r and W^T y with the k-tiles' loads by cp.async into 4 or 3 raw stages
#     (w32-async-4, -3): their GPU tests, the in-process float32 step with each and at the defaults, the float32
#     product floors (their rows beside the others), then the float32 rows with both PyTorch peers, eager and
#     compiled (--compile), at the fastest
#   PART=short (about 150 s): third's GPU tests, and the in-process float32 step with w32-async-4 and at the defaults
source bench/device_setup.sh
card
case "${PART:-first}" in
first)
  gpu_tests ${TESTS_S:-150} tests/test_gpu.py \
    -k "split_tf32_forward_on_the_gpu or split_tf32_transpose_on_the_gpu or split_update_on_wgmma or float32_training"
  tail -3 $OUT/gpu-tests.log
  declare -A settings=([float32-f0-t0]="DASKSAE_FLOAT32_WGMMA_FORWARD=0 DASKSAE_FLOAT32_WGMMA_TRANSPOSE=0"
    [float32-fsplit-t0]="DASKSAE_FLOAT32_WGMMA_FORWARD=w32-split DASKSAE_FLOAT32_WGMMA_TRANSPOSE=0"
    [float32-fsplit2-t0]="DASKSAE_FLOAT32_WGMMA_FORWARD=w32-split-2 DASKSAE_FLOAT32_WGMMA_TRANSPOSE=0"
    [float32-fsplit2-t1]="DASKSAE_FLOAT32_WGMMA_FORWARD=w32-split-2 DASKSAE_FLOAT32_WGMMA_TRANSPOSE=1")
  for label in float32-fsplit2-t1 float32-fsplit2-t0 float32-fsplit-t0 float32-f0-t0; do
    STEP_S=${STEP_S:-50} in_process $label ${settings[$label]}
  done
  faster=$(faster_of float32-fsplit2-t1 float32-fsplit2-t0)
  faster=$(faster_of $faster float32-fsplit-t0)
  faster=$(faster_of $faster float32-f0-t0)
  echo "faster: $faster (${settings[$faster]})"
  (export ${settings[$faster]}; ratio_float32 ${RATIO_S:-200}) ;;
second)
  floors_float32
  for transpose in all 1; do  # the first stage's cells of 48 on wgmma too, or only the cells of 128
    STEP_S=${STEP_S:-50} in_process float32-t$transpose DASKSAE_FLOAT32_WGMMA_FORWARD=${FORWARD32:-w32-split-2} \
      DASKSAE_FLOAT32_WGMMA_TRANSPOSE=$transpose
  done
  STEP_DTYPE=bfloat16 STEP_S=${STEP_S:-50} in_process bfloat16-defaults
  gpu_tests ${TESTS_S:-150} tests/test_gpu_tiled.py
  tail -3 $OUT/gpu-tests.log
  timeout ${ONE_S:-80} python3 bench/gpu_step.py --configs coates200 --minibatch 96 --modes limit,dasksae-1w \
    --dtypes bfloat16 --precisions bfloat16 --steps-per-task 10 --runs 20 --pipelined \
    --json $OUT/gpu-step-one-worker.json 2>&1 | filter | grep -v "  gemm\|cuda graphs" | tee -a $OUT/gpu-step.log ;;
third)
  gpu_tests ${TESTS_S:-90} tests/test_gpu.py -k "async"
  tail -3 $OUT/gpu-tests.log
  declare -A settings=(
    [float32-async4]="DASKSAE_FLOAT32_WGMMA_FORWARD=w32-async-4 DASKSAE_FLOAT32_WGMMA_TRANSPOSE=w32-async-4"
    [float32-async3]="DASKSAE_FLOAT32_WGMMA_FORWARD=w32-async-3 DASKSAE_FLOAT32_WGMMA_TRANSPOSE=w32-async-3"
    [float32-defaults]="DASKSAE_FLOAT32_WGMMA_FORWARD=auto DASKSAE_FLOAT32_WGMMA_TRANSPOSE=auto")
  for label in float32-async4 float32-async3 float32-defaults; do
    STEP_S=${STEP_S:-45} in_process $label ${settings[$label]}
  done
  faster=$(faster_of float32-async4 float32-async3)
  faster=$(faster_of $faster float32-defaults)
  echo "faster: $faster (${settings[$faster]})"
  timeout ${PRODUCT_S:-70} python3 bench/product_floor.py --precision float32 --config coates200 --minibatch 96 \
    --runs 5 --json $OUT/product-floor-float32.json 2>&1 | filter | grep "all\|kernel" | tee $OUT/product-floor.log
  (export ${settings[$faster]}; ratio_float32 ${RATIO_S:-220} --compile) ;;
short)  # (about 150 s: what 250 s of device time allows) third's GPU tests and two of its in-process steps
  gpu_tests ${TESTS_S:-70} tests/test_gpu.py -k "async or float32_training_with_the_split_tf32_forward"
  tail -3 $OUT/gpu-tests.log
  STEP_S=${STEP_S:-40} in_process float32-async4 DASKSAE_FLOAT32_WGMMA_FORWARD=w32-async-4 \
    DASKSAE_FLOAT32_WGMMA_TRANSPOSE=w32-async-4
  STEP_S=${STEP_S:-40} in_process float32-defaults ;;
esac
cd $OUT && tar czf ../results.tgz . && rm -f ./* && mv ../results.tgz .  # one file back
true
