#!/bin/bash
# Session 43's GPU checks (results in bench/results/session43/<part>/, each with its command.txt).
#   PART=bytes (about 200 s): where the bfloat16 step's time goes against its bytes. Nsight Compute over one
#     in-process coates200 step (M=96, CUDA graphs off): each kernel's time and DRAM and L2 bytes
#     (bench/kernel_bytes.py), then the bfloat16 update's floors (bench/update_floor.py: the fused kernel, the same
#     step with no products, a copy)
#   PART=windows, PART=update, PART=row, PART=final, PART=overlap and PART=pairs (not yet run): see their cases below.  PART=stages (the update's operand tiles in 3 or 4 stages) ran at e82b394
source bench/device_setup.sh
card
case "${PART:-bytes}" in
bytes)
  NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
  echo "ncu: $NCU"
  timeout ${NCU_S:-240} $NCU --profile-from-start off --cache-control none --clock-control none --csv --page raw \
    --print-units base --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,lts__t_bytes.sum \
    python3 bench/kernel_bytes.py --step --config coates200 --minibatch 96 --dtype bfloat16 > $OUT/step.csv 2> $OUT/ncu.err
  echo "ncu rc $?"; tail -3 $OUT/ncu.err
  python3 bench/kernel_bytes.py --table $OUT/step.csv --json $OUT/kernel-bytes.json | tee $OUT/kernel-bytes.log | head -45
  timeout ${FLOOR_S:-60} python3 bench/update_floor.py --config coates200 --minibatch 96 --runs 10 \
    --json $OUT/update-floor-bfloat16.json 2>&1 | filter | tee $OUT/update-floor.log ;;
windows)  # (about 300 s) the window kernels a thread to WINDOW_ROWS rows (pooling's and LCN's: sums of source rows kept in a
  # ring): the GPU tests of pooling, LCN and whole steps against the CPU (float32 and bfloat16, 1 and 4 workers), then
  # Nsight Compute's bytes of one bfloat16 step as in PART=bytes, then the in-process bfloat16 step twice
  gpu_tests ${TESTS_S:-150} tests/test_gpu.py tests/test_gpu_tiled.py \
    -k "pooling or full_step or five_training or gpu_training_equals_cpu or reduced_precision"
  tail -3 $OUT/gpu-tests.log
  NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
  timeout ${NCU_S:-120} $NCU --profile-from-start off --cache-control none --clock-control none --csv --page raw \
    --print-units base --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,lts__t_bytes.sum \
    python3 bench/kernel_bytes.py --step --config coates200 --minibatch 96 --dtype bfloat16 > $OUT/step.csv 2> $OUT/ncu.err
  echo "ncu rc $?"
  python3 bench/kernel_bytes.py --table $OUT/step.csv --json $OUT/kernel-bytes.json | tee $OUT/kernel-bytes.log \
    | grep "pool\|lcn\|^all"
  for round in 1 2; do STEP_DTYPE=bfloat16 in_process windows; done ;;
update|overlap)  # (about 150 s) the update's products on wgmma (mma_update.py's rows-wgmma, since taken out,
  # rows-wide-wgmma, gemm-only-wgmma): the update's GPU tests (each variant against NumPy), then the update's floors
  # with them beside the training's.  PART=overlap (about 100 s; built after the device time was spent, not yet run):
  # the same with the specialized warps' products on wgmma (rows-overlap-wgmma) beside rows-overlap
  [ "$PART" = overlap ] && VARIANTS=${VARIANTS:-rows,rows-wide,rows-overlap,rows-overlap-wgmma}
  gpu_tests ${TESTS_S:-80} tests/test_gpu.py -k "tensor_core_update_on_the_gpu"
  tail -3 $OUT/gpu-tests.log
  timeout ${FLOOR_S:-100} python3 bench/update_floor.py --config coates200 --minibatch 96 --runs 10 \
    --variants ${VARIANTS:-rows,rows-wide,rows-wide-wgmma,gemm-only-wgmma} \
    --json $OUT/update-floor-bfloat16.json 2>&1 | filter | tee $OUT/update-floor.log ;;
row)  # (about 330 s) at the defaults (the update on wgmma, DASKSAE_WGMMA_UPDATE=1): the GPU tests of the update and of
  # training on wgmma, the bfloat16 rows (the limit and the 1 worker pipelined), then the in-process bfloat16
  # step with the update on mma.sync and on wgmma, twice, each in a process of its own
  gpu_tests ${TESTS_S:-120} tests/test_gpu.py tests/test_gpu_tiled.py \
    -k "tensor_core_update_on_the_gpu or on_wgmma or reduced_precision or five_training"
  tail -3 $OUT/gpu-tests.log
  timeout ${ONE_S:-150} python3 bench/gpu_step.py --configs coates200 --minibatch 96 --modes limit,dasksae-1w \
    --dtypes bfloat16 --precisions bfloat16 --steps-per-task 10 --runs 20 --pipelined \
    --json $OUT/gpu-step-one-worker.json 2>&1 | filter | grep -v "  gemm\|cuda graphs" | tee -a $OUT/gpu-step.log
  for round in 1 2; do
    STEP_DTYPE=bfloat16 in_process mma-sync DASKSAE_WGMMA_UPDATE=0
    STEP_DTYPE=bfloat16 in_process wgmma DASKSAE_WGMMA_UPDATE=1
  done ;;
final)  # (about 300 s) at the defaults: the GPU tests of training on wgmma and of worker threads sharing the GPU
  # (CUDA graphs, now with the update on wgmma) against the CPU and replayed calls, then the 4-worker bfloat16
  # row, then the bfloat16 kernel table
  gpu_tests ${TESTS_S:-100} tests/test_gpu.py tests/test_gpu_tiled.py \
    -k "on_wgmma or cuda_graphs_equal or gpu_training_equals_cpu"
  tail -3 $OUT/gpu-tests.log
  FOUR_S=${FOUR_S:-130} four bfloat16 bfloat16
  kernel_table_bfloat16 ${TABLE_S:-90} 14 ;;
pairs)  # (about 200 s; built after the device time was spent, not yet run) W^T y with the fold in blocks of two cells
  # (mma_transpose.py's w64x3-pairs, DASKSAE_WGMMA_TRANSPOSE=w64x3-pairs): its GPU tests (against NumPy, and training
  # against mma.sync), the bfloat16 product floors (its transpose-w64x3-pairs row beside w64x3-swizzled's), then the
  # in-process bfloat16 step with each, twice, each in a process of its own
  gpu_tests ${TESTS_S:-100} tests/test_gpu.py -k "transpose_with_the_fold_on_the_gpu or transpose_on_wgmma"
  tail -3 $OUT/gpu-tests.log
  timeout ${PRODUCT_S:-60} python3 bench/product_floor.py --config coates200 --minibatch 96 --runs 10 \
    --json $OUT/product-floor-bfloat16.json 2>&1 | filter | tee $OUT/product-floor.log | grep "all"
  for round in 1 2; do
    STEP_DTYPE=bfloat16 in_process one-cell DASKSAE_WGMMA_TRANSPOSE=1
    STEP_DTYPE=bfloat16 in_process pairs DASKSAE_WGMMA_TRANSPOSE=w64x3-pairs
  done ;;
esac
cd $OUT && tar czf ../results.tgz . && rm -f ./* && mv ../results.tgz .  # one file back
true
