#!/usr/bin/env bash
# On the lent GPU machine (device tool, carry [".whl"]), session 20. .whl as in bench/gpu_session14_check.sh's header.
# Session 20's first call was PART=next of bench/gpu_session19_check.sh at c70928c (session20/next/): 31 GPU tests of
# our kernels passed; the in-process float32 coates200 step with (DASKSAE_UPDATE_PREFETCH / DASKSAE_WAVE_CHUNKS)
# 0/0 55.0 and 55.4 ms, 1/0 54.4, 0/1 55.1, 1/1 55.2: the prefetch about 0.6-1.0 ms at most, the waves nothing.
# New since then:
#   DASKSAE_UPDATE_STAGING  (opt-in, read at import, so each row is a process of its own) the fused update's blocks
#                           copy their U and v into 96 KiB of shared memory with cp.async at their start, while
#                           their products run; the epilogue reads them there.
#   kernels/elementwise.py  the reconstruction error with its squared norm, the sparsity term's sum of ratios and the
#                           LCN backward's g - 2/M e into its window, each one pass (were 2-3 CuPy passes each).
#   PART=staging  the in-process float32 step with DASKSAE_UPDATE_STAGING 0, 1, 0, 1; then, with the faster of the
#                 two, the float32 limit, in-process, 1-worker (pipelined, as dasksae train runs its tasks) and
#                 PyTorch rows in one process, and all GPU tests (the elementwise passes touch every training
#                 path). About 480 s. (Two calls for it were refused: 90 s of device time each.)
#   PART=table    the issue's table in one process, pipelined as dasksae train runs its tasks (--pipelined), with
#                 DASKSAE_UPDATE_STAGING as set. About 500 s.
# Logs are tarred (logs.tgz): the device returns at most 8 files from $OUT. The rows' helpers: bench/device_setup.sh.
source bench/device_setup.sh
card
case "${PART:-staging}" in
staging)
  for staged in 0 1 0 1; do
    STEP_S=${STEP_S:-45} in_process "staging-$staged" DASKSAE_UPDATE_STAGING=$staged
  done
  export DASKSAE_UPDATE_STAGING=$(faster_of staging-0 staging-1 | sed "s/staging-//")
  echo "DASKSAE_UPDATE_STAGING=$DASKSAE_UPDATE_STAGING (the faster) from here on" | tee -a $OUT/gpu-step.log
  ratio_float32 ${RATIO_S:-150} --pipelined
  gpu_tests ${TESTS_S:-200} tests/test_gpu.py tests/test_gpu_tiled.py
  cd $OUT && tar czf logs.tgz gpu-step-*.json && rm -f gpu-step-*.json ;;
table)
  issue_table ${TABLE_S:-540} --pipelined ;;
esac
true
