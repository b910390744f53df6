#!/bin/bash
# Session 45's GPU checks (results in bench/results/session45/<part>/, each with its command.txt).
#   PART=bulk (about 330 s): the update with the tile's raw values (rows-bulk-raw-wgmma) or raw and velocity
#     (rows-bulk-wgmma) brought into shared memory by bulk copies at the block's start: their GPU tests against NumPy,
#     the update floors over coates200's stages (M=96) beside rows-wide-wgmma, then the in-process bfloat16 step at the
#     default and with the faster bulk variant, twice in turn
#   PART=row (about 300 s): the bfloat16 rows (limit, in-process, 1 worker; 4 worker threads) with the update's
#     variant VARIANT (or the default), after the GPU tests that train on the GPU
#   PART=connections (about 450 s): the 4 worker threads' kernel table, with how long 1, 2, 3, 4+ kernels run at once,
#     and their issue row, at CUDA_DEVICE_MAX_CONNECTIONS 8 (the default) and 32
source bench/device_setup.sh
card
case "${PART:-bulk}" in
bulk)
  gpu_tests ${TESTS_S:-120} tests/test_gpu.py -k "tensor_core_update_on_the_gpu and (bulk or rows-wide-wgmma)"
  tail -3 $OUT/gpu-tests.log
  timeout ${FLOOR_S:-100} python3 bench/update_floor.py --config coates200 --minibatch 96 --runs 10 \
    --variants ${VARIANTS:-rows-bulk-raw-wgmma,rows-bulk-wgmma} \
    --json $OUT/update-floor-bfloat16.json 2>&1 | filter | tee $OUT/update-floor.log
  BEST=$(awk '$1 == "all" && $3 ~ /^\(rows-bulk/ { gsub(/[()]/, "", $3); if (!b || $5 < m) { m = $5; b = $3 } }
    END { print b }' $OUT/update-floor.log)
  echo "fastest bulk: ${BEST:=rows-bulk-wgmma}" | tee -a $OUT/gpu-step.log
  for round in 1 2; do
    STEP_DTYPE=bfloat16 in_process wide DASKSAE_WGMMA_UPDATE=1
    STEP_DTYPE=bfloat16 in_process bulk DASKSAE_WGMMA_UPDATE=$BEST
  done ;;
row)  # (about 300 s) the bfloat16 rows with the update's variant VARIANT (default: the default): the limit, the
  # in-process step and 1 worker (10 steps a task), then 4 worker threads; the GPU tests that train on the GPU
  [ -n "$VARIANT" ] && export DASKSAE_WGMMA_UPDATE=$VARIANT
  gpu_tests ${TESTS_S:-100} tests/test_gpu.py tests/test_gpu_tiled.py -k "gpu_training_equals_cpu or cuda_graphs_equal"
  tail -3 $OUT/gpu-tests.log
  timeout ${ROW_S:-120} python3 bench/gpu_step.py --configs coates200 \
    --minibatch 96 --modes limit,dasksae-1w --dtypes bfloat16 --steps-per-task 10 --runs 20 \
    --json $OUT/gpu-step-1w-bfloat16.json 2>&1 | filter | grep -v "  gemm\|cuda graphs" | tee -a $OUT/gpu-step.log
  FOUR_S=${FOUR_S:-120} four bfloat16 bfloat16 ;;
connections)  # (about 450 s) whether the 4 worker threads' kernels run side by side: their kernel table (with the time
  # 1, 2, 3, 4+ kernels run at once) at the default 8 host-to-device connections and at 32
  # (CUDA_DEVICE_MAX_CONNECTIONS: streams beyond the connections share a queue, and queue behind each other's waits);
  # then the 4-worker row at each
  TABLE_S=${TABLE_S:-100} table_with_gaps 4w --tiles 2x2 --workers 4 --pipelined | head -3
  grep "at once" $OUT/kernel-table-bfloat16-4w.log
  (export CUDA_DEVICE_MAX_CONNECTIONS=32; TABLE_S=${TABLE_S:-100} table_with_gaps 4w-c32 --tiles 2x2 --workers 4 \
    --pipelined | head -3; grep "at once" $OUT/kernel-table-bfloat16-4w-c32.log
    FOUR_S=${FOUR_S:-110} four c32 bfloat16)
  FOUR_S=${FOUR_S:-110} four c8 bfloat16 ;;
esac
cd $OUT && tar czf ../results.tgz . && rm -f ./* && mv ../results.tgz .  # one file back
true
