#!/usr/bin/env bash
# On the lent GPU machine (device tool, carry [".whl"]), session 21. .whl as in bench/gpu_session14_check.sh's header.
# Session 21's first two calls ran bench/gpu_session20_check.sh at 55cea52 (bench/results/session21/):
#   PART=staging  in-process float32 coates200 step, DASKSAE_UPDATE_STAGING 1 / 0 / 1: 53.3, 54.4, 53.4 ms (the first
#                 0 ran past its 45 s while compiling); then, staged, limit 33.8 ms, in-process 53.2, 1 worker
#                 pipelined 54.0, PyTorch 268.9 ms: 4.98x (1 worker), 5.05x (in-process); 151 GPU tests passed.
#   PART=table    the table in one process, staged: 1 worker float32 53.8 ms (63.0% of the limit, 5.00x
#                 PyTorch's 269.3 ms), bfloat16 29.8 ms (24.7%, 7.72x PyTorch's 230.1 ms); 4 threads 1.16x / 1.23x.
# DASKSAE_UPDATE_STAGING=1 is the default since (085eb0b).
#   PART=profile  the float32 kernel table of the one-tile step with today's defaults (where the 53 ms go now), then
#                 the float32 ratio rows (limit, in-process, 1 worker pipelined, PyTorch) twice, each a process of its
#                 own. About 400 s.
source bench/device_setup.sh
card
case "${PART:-profile}" in
profile)
  kernel_table_float32 ${KERNELS_S:-120}
  for run in 1 2; do
    ratio_float32 ${RATIO_S:-150} --pipelined
    mv $OUT/gpu-step-ratio-float32.json $OUT/gpu-step-ratio-float32-$run.json
  done ;;
esac
true
