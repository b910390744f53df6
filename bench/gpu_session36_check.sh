#!/bin/bash
# Session 36's GPU checks (results in bench/results/session36/<part>/, each with its command.txt).
#   PART=first  (about 480 s) where the bfloat16 step's time goes besides the update, on the card at hand:
#     0. the transpose's GPU tests (3 channels now take the tensor-core transpose: coates200's stage 1);
#     1. bench/product_floor.py on coates200, M=96, every stage: the tensor-core W x (forward) and W^T y with the
#        fold (transpose) against a kernel that only reads the bfloat16 weights they read (their one operand from
#        memory);
#     2. the same under Nsight Compute (stage 2, each kernel's 3 launches): DRAM and L2 throughput, occupancy, warp
#        stalls, spills (ncu's text report);
#     3. the bfloat16 kernel table of the in-process one-tile step (bench/kernel_table.py);
#     4. Nsight Compute's speed-of-light section of the step's small kernels (pooling, LCN, block rows, code
#        gradient, dots, conversions): which of them are at the card's memory rate.
source bench/device_setup.sh
card
NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
echo "ncu: $NCU"
case "${PART:-first}" in
first)
  timeout ${TESTS_S:-120} python3 -m pytest -m gpu -q -p no:cacheprovider -p no:logging --tb=short tests/test_gpu.py \
    -k "tensor_core_transpose" 2>&1 | tail -30 > $OUT/gpu-tests.log
  echo "tests: $(tail -1 $OUT/gpu-tests.log)"
  timeout ${FLOOR_S:-90} python3 bench/product_floor.py --config coates200 --minibatch 96 --runs 10 \
    --json $OUT/product-floor.json 2>&1 | filter | tee $OUT/product-floor.log
  timeout ${NCU_S:-150} $NCU --clock-control none \
    -k regex:"dasksae_mma_filter_forward|dasksae_mma_filter_transpose_fold|dasksae_stream_read" \
    --launch-count 9 --section SpeedOfLight --section MemoryWorkloadAnalysis --section MemoryWorkloadAnalysis_Tables \
    --section WarpStateStats --section Occupancy --section LaunchStats --section SchedulerStats \
    --metrics dram__bytes_read.sum,dram__bytes_write.sum,lts__t_sector_hit_rate.pct,gpu__time_duration.sum \
    python3 bench/product_floor.py --config coates200 --minibatch 96 --runs 1 --stages 2 > $OUT/product-counters.log 2>&1
  echo "ncu rc $?"
  grep -E "^  dasksae_|Duration|DRAM Throughput|L2 Cache Throughput|dram__bytes|L2 Hit Rate|Spilling Requests |Registers Per|Achieved Occupancy|Theoretical Occupancy" \
    $OUT/product-counters.log | head -60
  timeout ${TABLE_S:-120} python3 bench/kernel_table.py --config coates200 --minibatch 96 --dtype bfloat16 --runs 3 \
    --top 40 --json $OUT/kernel-table-bfloat16.json 2>&1 | filter | head -80 > $OUT/kernel-table-bfloat16.log
  head -30 $OUT/kernel-table-bfloat16.log
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
