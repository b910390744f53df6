#!/bin/bash
# Session 42's GPU checks (results in bench/results/session42/<part>/, each with its command.txt).
#   PART=wgmma (about 300 s) the bfloat16 W x (and U g_r) on wgmma (kernels/mma_forward.py's WGMMA variants,
#     DASKSAE_WGMMA_FORWARD): its GPU tests (each variant against NumPy, bfloat16 training against mma.sync's), the
#     bfloat16 product floors with a row for each kernel (mma.sync's k64x3 and each wgmma variant, all stages), then
#     the in-process bfloat16 step with DASKSAE_WGMMA_FORWARD=0 and each variant (VARIANTS), each in a process of its
#     own.  First run with the touching core matrices only (w64x3, w64x4, w32x6 then; bench/results/session42/wgmma/),
#     then (PART=wgmma again, session42/spread/) with the spread ones that copy as mma.sync does, then (session42/
#     unfenced/, VARIANTS="0 w64x3 w32x6") with no async-proxy fence before the k-tile barrier.  Then (session42/swizzled/,
#     VARIANTS="0 w64x3-swizzled w64x4-swizzled") in CUTLASS's swizzled layouts, a warp's weight rows copied whole into
#     128-byte rows of shared memory (the counters had the others' copies split into single-sector L2 requests).
#     The layouts without swizzling (w64x3, w32x4, w32x6, w64x3-touching, w64x3-fenced) were then taken out of
#     kernels/mma_forward.py; their runs are at the commits in their command.txt.
source bench/device_setup.sh
card
case "${PART:-wgmma}" in
wgmma)
  gpu_tests ${TESTS_S:-120} tests/test_gpu.py -k "tensor_core_forward_on_the_gpu or training_on_wgmma"
  tail -5 $OUT/gpu-tests.log
  timeout ${PRODUCT_S:-60} python3 bench/product_floor.py --config coates200 --minibatch 96 --runs 10 \
    --json $OUT/product-floor-bfloat16.json 2>&1 | filter | tee $OUT/product-floor.log | grep "all"
  for variant in ${VARIANTS:-0 w64x3-swizzled w64x4-swizzled}; do
    STEP_DTYPE=bfloat16 in_process $variant DASKSAE_WGMMA_FORWARD=$variant
  done ;;
counters)  # (about 150 s) Nsight Compute on stage 2's W x: mma.sync's k64x3 against wgmma's w64x3 and w64x3-touching
  # (the first launches of product_floor.py's rows), each kernel's speed of light, stall reasons, shared-memory
  # wavefronts and conflicts, and tensor pipes
  NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
  echo "ncu: $NCU"
  timeout ${NCU_S:-200} $NCU --clock-control none -k regex:"dasksae_(mma|wgmma)_filter_forward" --launch-count 12 \
    --section SpeedOfLight --section WarpStateStats --section Occupancy --section MemoryWorkloadAnalysis_Tables \
    --metrics regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio,regex:sm__pipe_tensor.*cycles_active\.avg\.pct_of_peak_sustained_active,l1tex__data_bank_conflicts_pipe_lsu_mem_shared.sum,l1tex__data_pipe_lsu_wavefronts_mem_shared.sum,gpu__time_duration.sum \
    python3 bench/product_floor.py --config coates200 --minibatch 96 --runs 1 --stages 2 > $OUT/product-counters.log 2>&1
  echo "ncu rc $?"
  grep -E "^  dasksae_|gpu__time_duration|Compute \(SM\) Throughput|L1/TEX Cache Throughput|L2 Cache Throughput|DRAM Throughput|Achieved Occupancy|bank_conflicts|wavefronts_mem_shared|pipe_tensor|issue_stalled" \
    $OUT/product-counters.log | head -200 ;;
attributes)  # (about 90 s) registers and local memory of the W x kernels as the driver assembled the PTX and as
  # NVRTC's sm_90a machine code (bench/wgmma_attributes.py); stage 2's product floors with the machine code
  # (DASKSAE_WGMMA_TARGET=cubin); Nsight Compute's launch statistics and L2 sectors of mma.sync's k64x3 and wgmma's w64x3
  timeout 60 python3 bench/wgmma_attributes.py 2>&1 | filter | tee $OUT/attributes.log
  DASKSAE_WGMMA_TARGET=cubin timeout ${PRODUCT_S:-60} python3 bench/product_floor.py --config coates200 --minibatch 96 \
    --runs 10 --stages 2 --json $OUT/product-floor-cubin.json 2>&1 | filter | tee $OUT/product-floor-cubin.log
  NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
  timeout ${NCU_S:-120} $NCU --clock-control none -k regex:"dasksae_(mma|wgmma)_filter_forward" --launch-skip 8 \
    --launch-count 2 --section LaunchStats \
    --metrics 'regex:lts__t_(sectors|requests)_op_(read|write)\.sum$,regex:lts__t_sectors_srcunit_.*\.sum$,dram__bytes_read.sum,lts__t_sector_hit_rate.pct,gpu__time_duration.sum,regex:l1tex__t_(sectors|requests)_pipe_lsu_mem_(global|local)_op_(ld|st)\.sum$' \
    python3 bench/product_floor.py --config coates200 --minibatch 96 --runs 1 --stages 2 > $OUT/l2-counters.log 2>&1
  echo "ncu rc $?"
  grep -E "^  dasksae_|lts__|dram__|gpu__time|l1tex__t|Registers Per|Local|Shared Memory" $OUT/l2-counters.log | head -80 ;;
row)  # (about 180 s) after the swizzled wgmma W x became the default (DASKSAE_WGMMA_FORWARD=1): its GPU tests and
  # the bfloat16 ones that compare with it, then the issue's bfloat16 rows: the limit and the 1 worker pipelined
  gpu_tests ${TESTS_S:-80} tests/test_gpu.py -k "tensor_core_forward or training_on_wgmma or compiled_in_or_ldmatrix"
  tail -3 $OUT/gpu-tests.log
  timeout ${ONE_S:-150} python3 bench/gpu_step.py --configs coates200 --minibatch 96 --modes limit,dasksae-1w \
    --dtypes bfloat16 --precisions bfloat16 --steps-per-task 10 --runs 20 --pipelined \
    --json $OUT/gpu-step-one-worker.json 2>&1 | filter | grep -v "  gemm\|cuda graphs" | tee -a $OUT/gpu-step.log ;;
next|transpose)  # (transpose about 200 s, next about 420 s; prepared after the last call, not yet run) W^T y with the fold on wgmma
  # (DASKSAE_WGMMA_TRANSPOSE, kernels/mma_transpose.py's WGMMA): its GPU tests (against NumPy, and training against
  # mma.sync's), the bfloat16 product floors (its transpose-w64x3-swizzled row beside mma.sync's), then the in-process
  # bfloat16 step with it off and on, twice, each in a process of its own
  gpu_tests ${TESTS_S:-100} tests/test_gpu.py -k "transpose_with_the_fold_on_the_gpu or transpose_on_wgmma"
  tail -3 $OUT/gpu-tests.log
  timeout ${PRODUCT_S:-60} python3 bench/product_floor.py --config coates200 --minibatch 96 --runs 10 \
    --json $OUT/product-floor-bfloat16.json 2>&1 | filter | tee $OUT/product-floor.log | grep "all"
  for round in 1 2; do
    STEP_DTYPE=bfloat16 in_process off DASKSAE_WGMMA_TRANSPOSE=0
    STEP_DTYPE=bfloat16 in_process on DASKSAE_WGMMA_TRANSPOSE=1
  done
  if [ "$PART" = next ]; then  # then, at the defaults: the bfloat16 kernel table, and the 4-worker bfloat16 row
    kernel_table_bfloat16 ${TABLE_S:-110} 12
    FOUR_S=${FOUR_S:-130} four bfloat16 bfloat16
  fi ;;
esac
cd $OUT && tar czf ../results.tgz . && rm -f ./* && mv ../results.tgz .  # one file back
true
