#!/usr/bin/env bash
# On the lent GPU machine (device tool, carry [".whl"]), session 20. .whl as in bench/gpu_session14_check.sh's header.
# Session 20's first call was PART=next of bench/gpu_session19_check.sh at c70928c (session20/next/): 31 GPU tests of
# our kernels passed; the in-process float32 coates200 step with (DASKSAE_UPDATE_PREFETCH / DASKSAE_WAVE_CHUNKS)
# 0/0 55.0 and 55.4 ms, 1/0 54.4, 0/1 55.1, 1/1 55.2: the prefetch about 0.6-1.0 ms at most, the waves nothing.
# New since then (opt-in, read at import, so each row is a process of its own):
#   DASKSAE_UPDATE_STAGING  the fused update's blocks copy their U and v into 96 KiB of shared memory with cp.async
#                           at their start, while their products run; the epilogue reads them there.
#   PART=staging  the GPU tests of our kernels and the update (with the staging's bit-for-bit test), then the
#                 in-process float32 step with (DASKSAE_UPDATE_STAGING / DASKSAE_UPDATE_PREFETCH) 0/0, 1/0, 0/1,
#                 1/0, 0/0, the float32 kernel table staged, and the 1-worker float32 rows staged. About 430 s.
#   PART=table    the issue's table with the defaults, in one process (as PART=table of bench/gpu_session17_check.sh).
#                 About 450 s.
# Logs are tarred (logs.tgz): the device returns at most 8 files from $OUT. The rows' helpers: bench/device_setup.sh.
source bench/device_setup.sh
card
case "${PART:-staging}" in
staging)
  gpu_tests ${TESTS_S:-100} tests/test_gpu.py -k "implicit or simt or maps or update or radial or prefetch or unit_norm or staged"
  for both in 0/0 1/0 0/1 1/0 0/0; do
    STEP_S=${STEP_S:-50} in_process "staging-${both%/*}-prefetch-${both#*/}" DASKSAE_UPDATE_STAGING=${both%/*} \
      DASKSAE_UPDATE_PREFETCH=${both#*/}
  done
  kernel_table_float32 ${KERNELS_S:-70} DASKSAE_UPDATE_STAGING=1
  DASKSAE_UPDATE_STAGING=1 one_worker_float32 ${ONEW_S:-110}
  cd $OUT && tar czf logs.tgz gpu-step-*.json kernel-table.log && rm -f gpu-step-*.json kernel-table.log ;;
table)
  issue_table ${TABLE_S:-540} ;;
esac
true
