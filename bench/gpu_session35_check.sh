#!/bin/bash
# Session 35's GPU checks (results in bench/results/session35/<part>/, each with its command.txt).
#   PART=first  (about 420 s)
#     1. bench/update_floor.py on coates200, M=96, bfloat16, every stage: the fused tensor-core update against its
#        products alone, the same SGD step with no products (a streaming kernel of the same 18 bytes a parameter)
#        and a device copy: how near the update is to its bytes, measured rather than estimated.
#     2. The same under Nsight Compute (stage 2, each kernel's 3 launches: the fused update, its products alone,
#        the streaming step): DRAM bytes read and written, throughput against the card's peak, L2 hit rate, warp
#        stalls, occupancy (ncu's text report; NCU_S seconds).
#     3. 4 worker threads on 2x2 tiles, pipelined, 20 groups, bfloat16 then float32 (FOUR_DTYPES), each beside its
#        own in-process step: the issue's 4-worker row on this card (session 34's PART=four, which did not run).
#   PART=resident  (about 200 s)  the rows-resident-whole variant of the tensor-core update (kernels/mma_update.py: a
#     block takes 8 column tiles in turn, its codes kept in shared memory), after PART=first found the update bound by
#     L2 (the operand tiles' traffic beside the update's 18 bytes a parameter):
#     1. the update's GPU tests (each variant against NumPy; training with it bit for bit as with auto's);
#     2. bench/update_floor.py with it beside the training's variants (every stage);
#     3. Nsight Compute of it on stage 2 (one launch).
#     Session 35 ran this at 110564a (bench/results/session35/resident/), when the source also had resident variants
#     with each warp's step 8 rows at a time (rows-resident, -1, -4, -all, -1-load; all 3x slower and removed since)
#     and rows-resident-whole-wide, and DASKSAE_MMA_EPILOGUE took them: step 4 then timed the in-process bfloat16 step
#     with auto and with rows-resident-whole, in turn, twice (that commit's script; no switch takes it now).
source bench/device_setup.sh
card
case "${PART:-first}" in
first)
  timeout ${FLOOR_S:-90} python3 bench/update_floor.py --config coates200 --minibatch 96 --runs 10 \
    --json $OUT/update-floor.json 2>&1 | filter | tee $OUT/update-floor.log
  NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
  echo "ncu: $NCU"
  timeout ${NCU_S:-150} $NCU --clock-control none -k regex:"dasksae_mma_filter_weight_grad_update|dasksae_stream_sgd_step" \
    --launch-count 9 --section SpeedOfLight --section MemoryWorkloadAnalysis --section MemoryWorkloadAnalysis_Tables \
    --section WarpStateStats --section Occupancy --section LaunchStats --section SchedulerStats \
    --metrics dram__bytes_read.sum,dram__bytes_write.sum,lts__t_sector_hit_rate.pct,gpu__time_duration.sum \
    python3 bench/update_floor.py --config coates200 --minibatch 96 --runs 1 --stages 2 > $OUT/update-counters.log 2>&1
  echo "ncu rc $?: $(grep -c 'dasksae_' $OUT/update-counters.log) kernel lines"
  grep -E "dasksae_|Duration|DRAM Throughput|dram__bytes|Memory Throughput|L2 Hit|lts__t_sector_hit|Achieved Occupancy|Registers Per" \
    $OUT/update-counters.log | head -80
  for dtype in ${FOUR_DTYPES:-bfloat16 float32}; do
    FOUR_S=${FOUR_S:-100} four pipelined-$dtype $dtype --pipelined --runs-4w 20
  done ;;
resident)
  timeout ${TESTS_S:-150} python3 -m pytest -m gpu -q -p no:cacheprovider -p no:logging --tb=short tests/test_gpu.py \
    tests/test_cuda_sources.py -k "tensor_core_update or codes_resident or update_compiles" 2>&1 | tail -30 \
    > $OUT/gpu-tests.log
  echo "tests: $(tail -1 $OUT/gpu-tests.log)"
  timeout ${FLOOR_S:-120} python3 bench/update_floor.py --config coates200 --minibatch 96 --runs 10 \
    --variants rows,rows-resident-whole --json $OUT/update-floor.json 2>&1 | filter | tee $OUT/update-floor.log
  NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
  timeout ${NCU_S:-90} $NCU --clock-control none -k regex:dasksae_mma_filter_weight_grad_update --launch-skip 3 \
    --launch-count 1 --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats \
    --section Occupancy --section LaunchStats --section SchedulerStats \
    --metrics dram__bytes_read.sum,dram__bytes_write.sum,lts__t_sector_hit_rate.pct,gpu__time_duration.sum \
    python3 bench/update_floor.py --config coates200 --minibatch 96 --runs 1 --stages 2 --variants rows-resident-whole \
    > $OUT/update-counters-resident.log 2>&1
  grep -E "^  dasksae_|Duration|DRAM Throughput|L2 Cache Throughput|dram__bytes|L2 Hit Rate|Spilling Requests |Registers Per|Achieved Occupancy" \
    $OUT/update-counters-resident.log | head -20 ;;
esac
cd $OUT && tar czf ../results.tgz . && rm -f ./* && mv ../results.tgz .  # one file back
true
