#!/bin/bash
# Session 54's GPU checks (results in bench/results/session54/<part>/, each with its command.txt).
#   (session 54's first call ran session 53's PART=next, in next/: the pipelined 1-worker bfloat16 row 21.7 ms, 49.1%
#   of its limit; the in-process step 22.3 ms at the defaults, 21.7 with DASKSAE_CUDA_GRAPHS=1; the 1-worker rows with
#   graphs were cut by their 70 s limit)
#   PART=graphs (about 500 s): the pipelined 1-worker rows (10 steps a task) with the tile's step replayed as
#     CUDA graphs (DASKSAE_CUDA_GRAPHS=1) and at the defaults (auto: then off for one worker a GPU), each in a
#     process of its own, in turn: bfloat16 twice, then float32; each process's whole output in
#     one-worker-<label>.log with its seconds
#   PART=default (about 560 s): at the new default (DASKSAE_CUDA_GRAPHS=auto replays one tile as graphs since
#     session 54), the pipelined 1-worker bfloat16 row, every GPU test (TESTS_S seconds), then the float32 row
source bench/device_setup.sh
card
case "${PART:-graphs}" in
graphs)
  ROW_S=${WARM_S:-150} one_worker bfloat16-graphs bfloat16 DASKSAE_CUDA_GRAPHS=1
  ROW_S=90 one_worker bfloat16-defaults bfloat16 DASKSAE_CUDA_GRAPHS=auto
  ROW_S=120 one_worker bfloat16-graphs-2 bfloat16 DASKSAE_CUDA_GRAPHS=1
  ROW_S=90 one_worker bfloat16-defaults-2 bfloat16 DASKSAE_CUDA_GRAPHS=auto
  [ $SECONDS -lt 440 ] && ROW_S=$((560 - SECONDS)) one_worker float32-graphs float32 DASKSAE_CUDA_GRAPHS=1 ;;
default)
  ROW_S=${WARM_S:-130} one_worker bfloat16-defaults bfloat16
  gpu_tests ${TESTS_S:-330}
  tail -4 $OUT/gpu-tests.log
  [ $SECONDS -lt 470 ] && ROW_S=$((575 - SECONDS)) one_worker float32-defaults float32 ;;
esac
cd $OUT && tar czf ../results.tgz . && rm -f ./* && mv ../results.tgz .  # one file back
true
