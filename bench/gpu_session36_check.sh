#!/bin/bash
# Session 36's GPU checks (results in bench/results/session36/<part>/, each with its command.txt).
#   PART=first  (about 420 s)
#     1. the GPU tests of the transpose (3 channels now take the tensor-core transpose with the fold: coates200's
#        stage 1) and of the update's rows-144 variant (blocks of 128 x 144, 12 warps, two an SM: the codes' tile
#        read once for 144 columns), against NumPy and bit for bit against auto's training;
#     2. bench/update_floor.py with rows-144 (and, when session 36 ran it at 32d6ee2, its products alone:
#        gemm-only-144, since removed) beside the training's variants;
#     3. the in-process bfloat16 coates200 step with DASKSAE_MMA_EPILOGUE=auto and =rows-144, in turn, twice;
#     4. bench/product_floor.py: the tensor-core W x (forward) and W^T y with the fold (transpose) against a kernel
#        that only reads the bfloat16 weights they read, every stage;
#     5. the bfloat16 kernel table of the in-process one-tile step (bench/kernel_table.py).
#   PART=overlap  (about 400 s) the update's rows-overlap variants (kernels/mma_update.py: 8 producer warps take a
#     column tile's products while 8 consumer warps take the previous tile's step, codes resident, a block an SM):
#     1. their GPU tests (against NumPy; training bit for bit against auto's);
#     2. bench/update_floor.py with rows-overlap beside the training's variants (session 36 also ran rows-overlap-all,
#        every column tile of a block, at ad0f3d4, and rows-overlap-l2, the consumers asking L2 for the next tile, at
#        bc4199c with VARIANTS=rows-overlap-l2,rows-overlap STEP_VARIANT=rows-overlap-l2: both since removed);
#     3. the in-process bfloat16 coates200 step with DASKSAE_MMA_EPILOGUE=auto and =rows-overlap, in turn, twice;
#     4. Nsight Compute of rows-overlap on stage 2 (one launch).
#   PART=cells  (about 150 s) the transpose's GPU tests, bench/product_floor.py on stage 1 and the bfloat16 kernel
#     table of the in-process step.  Session 36 ran it at 23656c2, where the transpose took cells of fewer than 128
#     values several a block (coates200's stage 1: 2 cells of 48, the blocks' rows of y read once for both): slower
#     (stage 1 1.147 ms against PART=first's 0.999, the step's transposes 5.09 against 4.10 ms), reverted since.
#   PART=head  (about 60 s) the GPU tests of the kernels session 36 touched, at its last commit: the transpose (3
#     channels), the update's variants against NumPy (rows-144 and rows-overlap among them), training with each
#     benchmark variant bit for bit as with auto's.
#   PART=geometry  (about 400 s; built after session 36's device time was spent, not yet run) DASKSAE_MMA_GEOMETRY=1,
#     the tensor-core W x and W^T y compiled for each layer, and DASKSAE_MMA_LDMATRIX=1, W x's A fragments by
#     ldmatrix.x4: their GPU tests (training bit for bit as without) and the products' and the update's tests (the
#     resident and rows-overlap variants share resident_products since the session's last GPU call),
#     bench/product_floor.py with each of the four settings, the in-process bfloat16 step with both off and both on
#     in turn twice, and the kernel table with both on.
#   PART=counters  (about 300 s) Nsight Compute:
#     1. product_floor's kernels on stage 2 (each 3 launches): DRAM and L2 throughput, occupancy, warp stalls, spills;
#     2. the speed-of-light section of the step's small kernels (pooling, LCN, block rows, code gradient, dots,
#        conversions): which of them are at the card's memory rate.
source bench/device_setup.sh
card
NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
case "${PART:-first}" in
first)
  gpu_tests ${TESTS_S:-150} tests/test_gpu.py -k "tensor_core_transpose or (tensor_core_update_on_the_gpu and 144) or fewer_loads"
  timeout ${FLOOR_S:-90} python3 bench/update_floor.py --config coates200 --minibatch 96 --runs 10 \
    --variants rows-144 --json $OUT/update-floor.json 2>&1 | filter | tee $OUT/update-floor.log
  export STEP_DTYPE=bfloat16
  for round in 1 2; do
    in_process auto DASKSAE_MMA_EPILOGUE=auto
    in_process rows-144 DASKSAE_MMA_EPILOGUE=rows-144
  done
  timeout ${PRODUCT_S:-60} python3 bench/product_floor.py --config coates200 --minibatch 96 --runs 10 \
    --json $OUT/product-floor.json 2>&1 | filter | tee $OUT/product-floor.log
  kernel_table_bfloat16 ${TABLE_S:-120} 24 ;;
overlap)
  gpu_tests ${TESTS_S:-150} tests/test_gpu.py -k "(tensor_core_update_on_the_gpu and overlap) or fewer_loads"
  timeout ${FLOOR_S:-90} python3 bench/update_floor.py --config coates200 --minibatch 96 --runs 10 \
    --variants ${VARIANTS:-rows-overlap} --json $OUT/update-floor.json 2>&1 | filter \
    | tee $OUT/update-floor.log
  export STEP_DTYPE=bfloat16
  for round in 1 2; do
    in_process auto DASKSAE_MMA_EPILOGUE=auto
    in_process ${STEP_VARIANT:-rows-overlap} DASKSAE_MMA_EPILOGUE=${STEP_VARIANT:-rows-overlap}
  done
  timeout ${NCU_S:-90} $NCU --clock-control none -k regex:dasksae_mma_filter_weight_grad_update --launch-skip 3 \
    --launch-count 1 --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats \
    --section Occupancy --section LaunchStats --section SchedulerStats \
    --metrics dram__bytes_read.sum,dram__bytes_write.sum,lts__t_sector_hit_rate.pct,gpu__time_duration.sum \
    python3 bench/update_floor.py --config coates200 --minibatch 96 --runs 1 --stages 2 --variants ${STEP_VARIANT:-rows-overlap} \
    > $OUT/update-counters-overlap.log 2>&1
  grep -E "^  dasksae_|Duration|DRAM Throughput|L2 Cache Throughput|dram__bytes|L2 Hit Rate|Spilling Requests |Registers Per|Achieved Occupancy" \
    $OUT/update-counters-overlap.log | head -20 ;;
cells)
  gpu_tests ${TESTS_S:-120} tests/test_gpu.py -k "tensor_core_transpose"
  timeout ${PRODUCT_S:-60} python3 bench/product_floor.py --config coates200 --minibatch 96 --runs 10 --stages 1 \
    --json $OUT/product-floor.json 2>&1 | filter | tee $OUT/product-floor.log
  kernel_table_bfloat16 ${TABLE_S:-100} 6 ;;
head)
  gpu_tests ${TESTS_S:-150} tests/test_gpu.py -k "tensor_core_transpose or tensor_core_update or fewer_loads" ;;
geometry)
  gpu_tests ${TESTS_S:-150} tests/test_gpu.py \
    -k "compiled_in or tensor_core_transpose or tensor_core_forward or tensor_core_update or fewer_loads"
  for on in 00 10 01 11; do  # DASKSAE_MMA_GEOMETRY, then DASKSAE_MMA_LDMATRIX
    DASKSAE_MMA_GEOMETRY=${on:0:1} DASKSAE_MMA_LDMATRIX=${on:1:1} timeout ${PRODUCT_S:-60} python3 bench/product_floor.py \
      --config coates200 --minibatch 96 --runs 10 --json $OUT/product-floor-$on.json 2>&1 | filter \
      | sed "s/^/geometry, ldmatrix $on: /" | tee -a $OUT/product-floor.log
  done
  export STEP_DTYPE=bfloat16
  for round in 1 2; do
    in_process off DASKSAE_MMA_GEOMETRY=0 DASKSAE_MMA_LDMATRIX=0
    in_process on DASKSAE_MMA_GEOMETRY=1 DASKSAE_MMA_LDMATRIX=1
  done
  kernel_table_bfloat16 ${TABLE_S:-100} 6 DASKSAE_MMA_GEOMETRY=1 DASKSAE_MMA_LDMATRIX=1 ;;
counters)
  echo "ncu: $NCU"
  timeout ${NCU_S:-150} $NCU --clock-control none \
    -k regex:"dasksae_mma_filter_forward|dasksae_mma_filter_transpose_fold|dasksae_stream_read" \
    --launch-count 9 --section SpeedOfLight --section MemoryWorkloadAnalysis --section MemoryWorkloadAnalysis_Tables \
    --section WarpStateStats --section Occupancy --section LaunchStats --section SchedulerStats \
    --metrics dram__bytes_read.sum,dram__bytes_write.sum,lts__t_sector_hit_rate.pct,gpu__time_duration.sum \
    python3 bench/product_floor.py --config coates200 --minibatch 96 --runs 1 --stages 2 > $OUT/product-counters.log 2>&1
  echo "ncu rc $?"
  grep -E "^  dasksae_|Duration|DRAM Throughput|L2 Cache Throughput|dram__bytes|L2 Hit Rate|Spilling Requests |Registers Per|Achieved Occupancy|Theoretical Occupancy" \
    $OUT/product-counters.log | head -60
  timeout ${SMALL_S:-150} $NCU --clock-control none --launch-skip ${SMALL_SKIP:-200} --launch-count ${SMALL_COUNT:-60} \
    -k regex:"dasksae_(pool|lcn|block_rows|tied|radial|pair_sum|to_bfloat16|subtract|fold_patches|inverse|sum_maps)" \
    --section SpeedOfLight --metrics dram__bytes_read.sum,dram__bytes_write.sum,gpu__time_duration.sum \
    python3 bench/gpu_step.py --configs coates200 --minibatch 96 --modes in-process --dtypes bfloat16 --runs 2 \
    --warmup-runs 1 > $OUT/small-counters.log 2>&1
  echo "ncu small rc $?"
  grep -E "^  dasksae_|Duration|DRAM Throughput|dram__bytes" $OUT/small-counters.log | head -40 ;;
esac
cd $OUT && tar czf ../results.tgz . && rm -f ./* && mv ../results.tgz .  # one file back
true
