#!/bin/bash
# Session 48's GPU checks (results in bench/results/session48/<part>/, each with its command.txt).
#   PART=first (about 480 s), in this order, so that a short call brings back the most first:
#     the bfloat16 update's floors (bench/update_floor.py, coates200, M=96) with the step alone in the update's blocks
#       (step-only-wgmma, -192: no operands, no products) on the whole weights, with no copy and on the halves, and
#       the weights and momentum in tile order (-tiled: a block's tile of each contiguous), with and without products;
#     the float32 update split into TF32 terms on wgmma (rows-wide-wgmma with split_tf32): its GPU test, then the
#       float32 update's floors with its rows;
#     session 47's PART=rows: the tiled GPU tests (the default update path was refactored in session 47 and its
#       tiled GPU tests not rerun), the bfloat16 rows at the defaults (the limit, 1 worker pipelined);
#     the in-process float32 step with DASKSAE_FLOAT32_WGMMA_UPDATE 1 and 0, each in a process of its own
#   PART=forward32 (about 420 s; not yet run): float32 W x and U g_r on wgmma (mma_forward's w32-split,
#     DASKSAE_FLOAT32_WGMMA_FORWARD=1, built after this session's device time was spent): its GPU accuracy test and the
#     float32 training tests, the float32 product floors with its rows, the in-process float32 step with it on and off,
#     then the float32 rows with both PyTorch peers (ratio_float32) at the faster setting
#   PART=ncu (about 130 s): Nsight Compute over stage 2's bfloat16 rows, one launch a row (--warmup-runs 0): what the
#     update on the halves waits on that the step alone and the streaming steps do not (session 47's PART=ncu, with
#     the new rows)
source bench/device_setup.sh
card
NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
case "${PART:-first}" in
first)
  timeout ${FLOOR_S:-100} python3 bench/update_floor.py --config coates200 --minibatch 96 --runs 10 \
    --variants step-only-wgmma,step-only-wgmma-tiled,rows-wide-wgmma-tiled,step-only-wgmma-192,rows-wide-wgmma-192,rows-wide-wgmma-192-tiled \
    --json $OUT/update-floor.json 2>&1 | filter | tee $OUT/update-floor.log | grep "all"
  gpu_tests ${TESTS32_S:-60} tests/test_gpu.py -k "split_tf32_update_on_the_gpu or split_update_on_wgmma"
  cp $OUT/gpu-tests.log $OUT/gpu-tests-float32-update.log
  timeout ${FLOOR32_S:-55} python3 bench/update_floor.py --precision float32 --config coates200 --minibatch 96 \
    --runs 5 --json $OUT/update-floor-float32.json 2>&1 | filter | tee $OUT/update-floor-float32.log | grep "all"
  gpu_tests ${TESTS_S:-80} tests/test_gpu_tiled.py
  tail -3 $OUT/gpu-tests.log
  timeout ${ONE_S:-65} python3 bench/gpu_step.py --configs coates200 --minibatch 96 --modes limit,dasksae-1w \
    --dtypes bfloat16 --precisions bfloat16 --steps-per-task 10 --runs 20 --pipelined \
    --json $OUT/gpu-step-one-worker.json 2>&1 | filter | grep -v "  gemm\|cuda graphs" | tee -a $OUT/gpu-step.log
  for mode in 1 0; do STEP_S=${STEP_S:-50} in_process float32-wgmma-update-$mode DASKSAE_FLOAT32_WGMMA_UPDATE=$mode; done ;;
forward32)
  gpu_tests ${TESTS_S:-120} tests/test_gpu.py -k "split_tf32_forward_on_the_gpu or split_update_on_wgmma or float32_training"
  tail -3 $OUT/gpu-tests.log
  floors_float32
  for mode in 1 0; do STEP_S=${STEP_S:-60} in_process float32-wgmma-forward-$mode DASKSAE_FLOAT32_WGMMA_FORWARD=$mode; done
  faster=$(faster_of float32-wgmma-forward-1 float32-wgmma-forward-0)
  echo "faster: $faster"
  DASKSAE_FLOAT32_WGMMA_FORWARD=${faster##*-} ratio_float32 ${RATIO_S:-200} ;;
ncu)  # (about 130 s) Nsight Compute over stage 2's bfloat16 rows, one launch a row (--warmup-runs 0)
  echo "ncu: $NCU"
  timeout ${NCU_S:-130} $NCU --clock-control none -k regex:"dasksae_wgmma_filter_weight_grad_update|dasksae_stream" \
    --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats --section LaunchStats \
    --metrics dram__bytes_read.sum,dram__bytes_write.sum,lts__t_sector_hit_rate.pct,gpu__time_duration.sum \
    python3 bench/update_floor.py --config coates200 --minibatch 96 --runs 1 --warmup-runs 0 --stages 2 \
    --variants step-only-wgmma,step-only-wgmma-tiled,rows-wide-wgmma-tiled > $OUT/update-counters.log 2>&1
  echo "ncu rc $?: $(grep -c '  dasksae_' $OUT/update-counters.log) kernel lines"
  grep -E "^  dasksae_|Duration|DRAM Throughput|L2 Cache Throughput|dram__bytes" $OUT/update-counters.log | head -80 ;;
esac
cd $OUT && tar czf ../results.tgz . && rm -f ./* && mv ../results.tgz .  # one file back
true
