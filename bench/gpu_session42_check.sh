#!/bin/bash
# Session 42's GPU checks (results in bench/results/session42/<part>/, each with its command.txt).
#   PART=wgmma (about 300 s) the bfloat16 W x (and U g_r) on wgmma (kernels/mma_forward.py's WGMMA variants,
#     DASKSAE_WGMMA_FORWARD): its GPU tests (each variant against NumPy, bfloat16 training against mma.sync's), the
#     bfloat16 product floors with a row for each kernel (mma.sync's k64x3 and each wgmma variant, all stages), then
#     the in-process bfloat16 step with DASKSAE_WGMMA_FORWARD=0 and each variant (VARIANTS), each in a process of its
#     own.  First run with the touching core matrices only (w64x3, w64x4, w32x6 then; bench/results/session42/wgmma/),
#     then (PART=wgmma again, session42/spread/) with the spread ones that copy as mma.sync does, then (session42/
#     unfenced/, VARIANTS="0 w64x3 w32x6") with no async-proxy fence before the k-tile barrier.
source bench/device_setup.sh
card
case "${PART:-wgmma}" in
wgmma)
  gpu_tests ${TESTS_S:-120} tests/test_gpu.py -k "tensor_core_forward_on_the_gpu or training_on_wgmma"
  tail -5 $OUT/gpu-tests.log
  timeout ${PRODUCT_S:-60} python3 bench/product_floor.py --config coates200 --minibatch 96 --runs 10 \
    --json $OUT/product-floor-bfloat16.json 2>&1 | filter | tee $OUT/product-floor.log | grep "all"
  for variant in ${VARIANTS:-0 w64x3 w32x4 w32x6 0}; do
    STEP_DTYPE=bfloat16 in_process $variant DASKSAE_WGMMA_FORWARD=$variant
  done ;;
esac
cd $OUT && tar czf ../results.tgz . && rm -f ./* && mv ../results.tgz .  # one file back
true
