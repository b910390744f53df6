#!/usr/bin/env bash
# On the lent GPU machine (device tool, carry [".whl"]), session 19. .whl as in bench/gpu_session14_check.sh's header.
# Session 19's first call was PART=next of bench/gpu_session18_check.sh at ee1d60d (session19/next/): 135 GPU tests
# passed; our weight-gradient kernel ran at 35.3-35.9 TFLOP/s against cuBLAS's 41.4-44.4 on the gathered fields; the
# kernel table put it at 16.8 ms of a 62.8 ms float32 step, with the update (unit_rows_sgd) 8.7 ms after it.
# New since then, both switches default 1 (read at import, so each row is a process of its own):
#   DASKSAE_SMEM_SWIZZLE  our GEMM's shared tiles XOR-swizzled: the weight gradient's transposed B tile was stored
#                         with 4-way bank conflicts and the non-transposed A tiles with 2-way.
#   DASKSAE_FUSED_UPDATE  the weight gradient's kernel takes the unit-norm SGD step in its epilogue
#                         (dasksae_simt_filter_weight_grad_update): the gradient is never written nor read again.
#   PART=fused   all GPU tests at this commit, then the float32 products (bench/gemm_layouts.py --simt --implicit) with
#                the swizzle and without, the in-process float32 step with (swizzle/fused) 1/1, 1/0, 0/1, 0/0, 1/1, and
#                the float32 kernel table with the defaults. About 520 s.
#                Ran at 4b3e485 (session19/fused/): 140 passed, 1 failed (a new test compared a CuPy array as NumPy's);
#                (swizzle/fused) 1/1 60.0 and 59.5 ms, 1/0 63.8, 0/1 60.2, 0/0 64.0. The swizzle took the weight
#                gradient from 35.2-35.9 to 36.3-37.4 TFLOP/s but W x and W^T y from 43.2/42.2 to 41.6/39.9 (stage 2),
#                so now only the weight gradient is swizzled. The kernel table put a CuPy reduction of the row dots at
#                1.0 ms (now a kernel, a warp a row), and the backward's chunks were planned for an [X | G] buffer
#                and a gradient that no longer exist: 164-460 blocks a launch (stage 2: 0.62 of a wave of 264), now
#                sized for what they hold (287-1518).
#   PART=final   all GPU tests, then the 1-worker float32 row (limit, in-process, 1 worker), the float32 kernel table,
#                the 4 worker threads' float32 row (2x2 tiles, with its own in-process step), and the in-process step
#                with DASKSAE_SMEM_SWIZZLE=0. About 450 s.
#                Ran at b7aa7cc (session19/final/): 142 GPU tests passed; in-process 55.2 ms (60.8%), 1 worker 56.6 ms
#                (59.3%), 4 worker threads 63.8 ms (1.15x their process's 55.3 ms); the swizzle-0 row was cut by its 45 s.
#   PART=next    (prepared for session 20, not run) the GPU tests of our kernels and the fused update, then the
#                in-process float32 step with the opt-in (DASKSAE_UPDATE_PREFETCH / DASKSAE_WAVE_CHUNKS) 0/0, 1/0, 0/1,
#                1/1, 0/0, each a process of its own, and the float32 kernel table with both on. About 330 s.
#   PART=table   the issue's table with the defaults, in one process (as PART=table of bench/gpu_session17_check.sh).
#                About 450 s.
#   PART=onew    the float32 rows only (limit, in-process, 1 worker), with the defaults. About 120 s.
# Logs are tarred (logs.tgz): the device returns at most 8 files from $OUT. The rows' helpers are in
# bench/device_setup.sh (the fused and final parts ran before they were moved there, with the same commands).
source bench/device_setup.sh
card
case "${PART:-fused}" in
fused)
  gpu_tests ${TESTS_S:-170} tests/test_gpu.py tests/test_gpu_tiled.py
  for swizzle in 1 0; do
    DASKSAE_SMEM_SWIZZLE=$swizzle timeout ${LAYOUTS_S:-60} python3 bench/gemm_layouts.py --config coates200 --minibatch 96 \
      --precisions float32 --simt --implicit --runs 10 --json $OUT/gemm-layouts-swizzle-$swizzle.json 2>&1 | filter \
      | grep "simt\|implicit" | sed "s/^/swizzle-$swizzle: /" | tee -a $OUT/gemm-layouts.log
  done
  for both in 1/1 1/0 0/1 0/0 1/1; do
    in_process "swizzle-${both%/*}-fused-${both#*/}" DASKSAE_SMEM_SWIZZLE=${both%/*} DASKSAE_FUSED_UPDATE=${both#*/}
  done
  kernel_table_float32 ${KERNELS_S:-90}
  cd $OUT && tar czf logs.tgz gpu-step-*.json gemm-layouts-swizzle-*.json kernel-table.log \
    && rm -f gpu-step-*.json gemm-layouts-swizzle-*.json kernel-table.log ;;
final)
  gpu_tests ${TESTS_S:-170} tests/test_gpu.py tests/test_gpu_tiled.py
  one_worker_float32 ${ONEW_S:-120}
  kernel_table_float32 ${KERNELS_S:-80}
  FOUR_S=${FOUR_S:-150} four float32 float32
  in_process swizzle-0 DASKSAE_SMEM_SWIZZLE=0
  cd $OUT && tar czf logs.tgz gpu-step-*.json kernel-table.log && rm -f gpu-step-*.json kernel-table.log ;;
next)
  gpu_tests ${TESTS_S:-90} tests/test_gpu.py -k "implicit or simt or maps or update or radial or prefetch or unit_norm"
  for both in 0/0 1/0 0/1 1/1 0/0; do
    STEP_S=${STEP_S:-50} in_process "prefetch-${both%/*}-waves-${both#*/}" DASKSAE_UPDATE_PREFETCH=${both%/*} \
      DASKSAE_WAVE_CHUNKS=${both#*/}
  done
  kernel_table_float32 ${KERNELS_S:-80} DASKSAE_UPDATE_PREFETCH=1 DASKSAE_WAVE_CHUNKS=1
  cd $OUT && tar czf logs.tgz gpu-step-*.json kernel-table.log && rm -f gpu-step-*.json kernel-table.log ;;
onew)
  one_worker_float32 ${ONEW_S:-150} ;;
table)
  issue_table ${TABLE_S:-540} ;;
esac
true
