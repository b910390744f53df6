#!/bin/bash
# Session 51's GPU checks (results in bench/results/session51/<part>/, each with its command.txt).
#   PART=next (about 450 s, and about 180 s more where a variant beats the defaults): float32 W x, U g_r and W^T y in
#     w32-a-registers (session 51: A, the weights, split into wgmma's register fragments instead of staged in shared
#     memory; the tensor cores read only B's tiles) and W x, U g_r and W^T y in w32-hoisted (session 50: the fetch's
#     addresses kept from k-tile to k-tile): the in-process float32 step at the defaults (first, compiling the
#     kernels), with each and at the defaults again, the float32 product floors of those rows, their GPU tests, the
#     float32 kernel table of the one-tile step at the fastest setting, then, only where that is not the defaults,
#     the float32 rows with both PyTorch peers at it
#   PART=quick (about 250 s, for what little device time is left): the in-process float32 step at the defaults (first,
#     100 s for the kernels' first compiles) and in w32-a-registers (both products), the product floors of
#     w32-split-2 and w32-a-registers, then w32-a-registers' GPU tests
#   PART=floor (about 160 s, the least left): the product floors of w32-split-2 and w32-a-registers, then
#     w32-a-registers' GPU tests of the kernels against NumPy and float64
source bench/device_setup.sh
card
case "${PART:-next}" in
next)
  declare -A settings=([float32-defaults]="DASKSAE_FLOAT32_WGMMA_FORWARD=auto"
    [float32-a-registers]="DASKSAE_FLOAT32_WGMMA_FORWARD=w32-a-registers DASKSAE_FLOAT32_WGMMA_TRANSPOSE=w32-a-registers"
    [float32-hoisted]="DASKSAE_FLOAT32_WGMMA_FORWARD=w32-hoisted DASKSAE_FLOAT32_WGMMA_TRANSPOSE=w32-hoisted")
  # (on a fresh machine the first step compiles most kernels, which can outlast 45 s: session 50's quick/)
  STEP_S=${WARM_S:-100} in_process float32-first-defaults ${settings[float32-defaults]}
  for label in float32-a-registers float32-hoisted float32-defaults; do
    STEP_S=${STEP_S:-45} in_process $label ${settings[$label]}
  done
  faster=$(faster_of float32-defaults float32-a-registers)
  faster=$(faster_of $faster float32-hoisted)
  echo "faster: $faster (${settings[$faster]})"
  timeout ${PRODUCT_S:-45} python3 bench/product_floor.py --precision float32 --config coates200 --minibatch 96 \
    --runs 5 --rows forward-3xtf32-w32-split-2,forward-3xtf32-w32-a-registers,forward-3xtf32-w32-hoisted,forward-tf32,forward-tf32-w32-split-2,forward-tf32-w32-a-registers,transpose-3xtf32-w32-split-2,transpose-3xtf32-w32-a-registers,transpose-3xtf32-w32-hoisted \
    --json $OUT/product-floor-float32.json 2>&1 | filter | tee $OUT/product-floor.log
  gpu_tests ${TESTS_S:-75} tests/test_gpu.py -k "hoisted or a-registers"
  tail -3 $OUT/gpu-tests.log
  kernel_table_float32 ${TABLE_S:-75} ${settings[$faster]}
  [ "${RATIO:-1}" = 1 ] && [ $faster != float32-defaults ] \
    && (export ${settings[$faster]}; ratio_float32 ${RATIO_S:-180} --compile) ;;
quick)
  STEP_S=${WARM_S:-100} in_process float32-defaults DASKSAE_FLOAT32_WGMMA_FORWARD=auto
  STEP_S=${STEP_S:-60} in_process float32-a-registers DASKSAE_FLOAT32_WGMMA_FORWARD=w32-a-registers \
    DASKSAE_FLOAT32_WGMMA_TRANSPOSE=w32-a-registers
  timeout ${PRODUCT_S:-40} python3 bench/product_floor.py --precision float32 --config coates200 --minibatch 96 \
    --runs 5 --rows forward-3xtf32-w32-split-2,forward-3xtf32-w32-a-registers,transpose-3xtf32-w32-split-2,transpose-3xtf32-w32-a-registers \
    --json $OUT/product-floor-float32.json 2>&1 | filter | tee $OUT/product-floor.log
  gpu_tests ${TESTS_S:-50} tests/test_gpu.py -k "a-registers"
  tail -3 $OUT/gpu-tests.log ;;
floor)
  timeout ${PRODUCT_S:-100} python3 bench/product_floor.py --precision float32 --config coates200 --minibatch 96 \
    --runs 5 --rows forward-3xtf32-w32-split-2,forward-3xtf32-w32-a-registers,transpose-3xtf32-w32-split-2,transpose-3xtf32-w32-a-registers \
    --json $OUT/product-floor-float32.json 2>&1 | filter | tee $OUT/product-floor.log
  gpu_tests ${TESTS_S:-60} tests/test_gpu.py -k "a-registers and accurate"
  tail -3 $OUT/gpu-tests.log ;;
esac
cd $OUT && tar czf ../results.tgz . && rm -f ./* && mv ../results.tgz .  # one file back
true
