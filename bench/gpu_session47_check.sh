#!/bin/bash
# Session 47's GPU checks (results in bench/results/session47/<part>/, each with its command.txt).
#   PART=probe (about 60 s): the bfloat16 update's floors (bench/update_floor.py) with a row of the training's kernel
#     writing no bfloat16 copy (16 bytes a parameter instead of 18): what the update would take if the master weights'
#     high half were the products' operand (the split master weights), before building them
#   PART=split (about 480 s): the split master weights (dasksae.master_weights, DASKSAE_SPLIT_MASTER=1): the GPU tests
#     of the update and of bfloat16 training, the update's floors with the split rows (the training's variant and
#     4 or 3 loads in flight a thread, blocks of 64 x 192; a streaming kernel of the split step), then the in-process
#     bfloat16
#     step split (1) and whole (0), ROUNDS (2) times in turn, each in a process of its own
#   PART=last (about 250 s): split's floors (4 loads a thread, 64 x 192 blocks), the in-process step split and whole
#     with the training's update and with 64 x 192 blocks, then the GPU tests of the halves (a short call's order)
#   PART=ncu (about 150 s; not yet run): Nsight Compute over stage 2's update whole, with no copy and on the halves,
#     and the streaming steps: what the kernel on the halves waits on
#   PART=rows (about 450 s; not yet run): the tiled GPU tests, the bfloat16 rows at the defaults (the limit, 1 worker
#     pipelined, 4 worker threads) and the bfloat16 kernel table
source bench/device_setup.sh
card
case "${PART:-probe}" in
probe)
  timeout ${FLOOR_S:-100} python3 bench/update_floor.py --config coates200 --minibatch 96 --runs 10 \
    --json $OUT/update-floor.json 2>&1 | filter | tee $OUT/update-floor.log ;;
split)
  gpu_tests ${TESTS_S:-220} tests/test_gpu.py \
    -k "${TESTS_K:-split_master or tensor_core_update_on_the_gpu or bfloat16_training or update_in_the_weight_gradient}"
  tail -3 $OUT/gpu-tests.log
  timeout ${FLOOR_S:-150} python3 bench/update_floor.py --config coates200 --minibatch 96 --runs 10 \
    --variants rows-wgmma-loads-4,rows-wgmma-loads-3,rows-wide-wgmma-192 \
    --json $OUT/update-floor.json 2>&1 | filter | tee $OUT/update-floor.log | grep "all"
  for round in $(seq ${ROUNDS:-2}); do
    for mode in 1 0; do STEP_DTYPE=bfloat16 in_process split-$mode DASKSAE_SPLIT_MASTER=$mode; done
    for mode in 1 0; do
      STEP_DTYPE=bfloat16 in_process wide192-split-$mode DASKSAE_SPLIT_MASTER=$mode DASKSAE_WGMMA_UPDATE=rows-wide-wgmma-192
    done
  done ;;
last)  # (about 250 s) split's parts, the floors first: what a short call should bring back before it is cut
  timeout ${FLOOR_S:-100} python3 bench/update_floor.py --config coates200 --minibatch 96 --runs 10 \
    --variants rows-wgmma-loads-4,rows-wide-wgmma-192 \
    --json $OUT/update-floor.json 2>&1 | filter | tee $OUT/update-floor.log | grep "all"
  for mode in 1 0; do STEP_DTYPE=bfloat16 in_process split-$mode DASKSAE_SPLIT_MASTER=$mode; done
  for mode in 0 1; do
    STEP_DTYPE=bfloat16 in_process wide192-split-$mode DASKSAE_SPLIT_MASTER=$mode DASKSAE_WGMMA_UPDATE=rows-wide-wgmma-192
  done
  gpu_tests ${TESTS_S:-60} tests/test_gpu.py -k "${TESTS_K:-split_master or cache_hints or follows_the_gathered}"
  tail -3 $OUT/gpu-tests.log ;;
ncu)  # (about 150 s; not yet run) Nsight Compute over stage 2's update on the whole weights, without the copy and on the
  # halves, and the two streaming steps: DRAM and L2 throughput, warp stalls, issue: what the kernel on the halves
  # waits on that the streaming step on them does not
  NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
  echo "ncu: $NCU"
  timeout ${NCU_S:-150} $NCU --clock-control none -k regex:"dasksae_wgmma_filter_weight_grad_update|dasksae_stream" \
    --launch-count 16 --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats \
    --section Occupancy --section LaunchStats --section SchedulerStats \
    --metrics dram__bytes_read.sum,dram__bytes_write.sum,lts__t_sector_hit_rate.pct,gpu__time_duration.sum \
    python3 bench/update_floor.py --config coates200 --minibatch 96 --runs 1 --stages 2 > $OUT/update-counters.log 2>&1
  echo "ncu rc $?: $(grep -c 'dasksae_' $OUT/update-counters.log) kernel lines"
  grep -E "^  dasksae_|Duration|DRAM Throughput|L2 Cache Throughput|dram__bytes|Stall|Issued Warp|Achieved Occupancy" \
    $OUT/update-counters.log | head -120 ;;
rows)
  gpu_tests ${TESTS_S:-120} tests/test_gpu_tiled.py
  tail -3 $OUT/gpu-tests.log
  timeout ${ONE_S:-150} python3 bench/gpu_step.py --configs coates200 --minibatch 96 --modes limit,dasksae-1w \
    --dtypes bfloat16 --precisions bfloat16 --steps-per-task 10 --runs 20 --pipelined \
    --json $OUT/gpu-step-one-worker.json 2>&1 | filter | grep -v "  gemm\|cuda graphs" | tee -a $OUT/gpu-step.log
  FOUR_S=${FOUR_S:-110} four bfloat16 bfloat16
  kernel_table_bfloat16 ${TABLE_S:-80} 14 ;;
esac
cd $OUT && tar czf ../results.tgz . && rm -f ./* && mv ../results.tgz .  # one file back
true
