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
#   PART=table (about 560 s; for session 55): the rows for one dtype (DTYPE, float32 unless set) in one
#     process at the defaults: the limit, 1 worker and 4 worker threads with 2x2 tiles (pipelined, 10 steps a task),
#     the eager and compiled PyTorch peers; coates200, M=96. Session 53's one-process table was cut before its
#     compiled rows and was not pipelined. Run it twice, DTYPE=float32 and DTYPE=bfloat16, for the README's table
#   PART=largest (about 300 s; for session 55): the largest coates11.2b-family network whose float32 step fits the
#     card (bench/largest_update.py, 176, 168, 160 then 152 on an H100), with one tile's step as CUDA graphs (the
#     default since session 54) and as calls (DASKSAE_CUDA_GRAPHS=0), each in a process of its own: its bytes a
#     parameter, graphs' pools counted, against the plan (the issue's "measured bytes/param at the largest size")
#   PART=dots (about 560 s; for session 55): DASKSAE_FUSED_ROW_DOTS and DASKSAE_CODES_FROM_MAPS (built in session 54,
#     not yet run on a GPU): their GPU tests; the in-process bfloat16 step off, with the row dots, with the dots and
#     the maps, then off and with both again; the pipelined 1-worker rows with both and off, each in a process of
#     its own; the kernel table on one Dask worker with both where time is left
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
dots)
  gpu_tests ${TESTS_S:-150} tests/test_gpu.py -k "radial_dots or code_gradient"
  tail -4 $OUT/gpu-tests.log
  both="DASKSAE_FUSED_ROW_DOTS=1 DASKSAE_CODES_FROM_MAPS=1"
  STEP_DTYPE=bfloat16 STEP_S=70 in_process bfloat16-off DASKSAE_FUSED_ROW_DOTS=0
  STEP_DTYPE=bfloat16 STEP_S=60 in_process bfloat16-dots DASKSAE_FUSED_ROW_DOTS=1
  STEP_DTYPE=bfloat16 STEP_S=60 in_process bfloat16-both $both
  STEP_DTYPE=bfloat16 STEP_S=60 in_process bfloat16-off DASKSAE_FUSED_ROW_DOTS=0
  STEP_DTYPE=bfloat16 STEP_S=60 in_process bfloat16-both $both
  ROW_S=100 one_worker bfloat16-both bfloat16 $both
  ROW_S=100 one_worker bfloat16-off bfloat16 DASKSAE_FUSED_ROW_DOTS=0
  if [ $SECONDS -lt 450 ]; then
    export DASKSAE_FUSED_ROW_DOTS=1 DASKSAE_CODES_FROM_MAPS=1
    TABLE_S=$((570 - SECONDS)) table_with_gaps both --workers 1 --dask --pipelined --steps-per-task 10
  fi ;;
largest)
  for graphs in auto 0; do
    DASKSAE_CUDA_GRAPHS=$graphs timeout ${LARGEST_S:-150} python3 bench/largest_update.py \
      --inputs ${INPUTS:-176,168,160,152} --minibatch 96 --dtype float32 \
      --json $OUT/largest-update-graphs-$graphs.json 2>&1 | filter \
      | sed "s/^/graphs $graphs: /" | tee -a $OUT/largest-update.log
  done ;;
table)
  timeout ${TABLE_S:-570} python3 bench/gpu_step.py --configs coates200 --minibatch 96 \
    --modes limit,dasksae-1w,dasksae-4w-threads,torch --dtypes ${DTYPE:-float32} --precisions ${DTYPE:-float32} \
    --steps-per-task 10 --steps-per-task-4w 10 --runs 20 --runs-4w 5 --pipelined --compile \
    --json $OUT/gpu-step-table-${DTYPE:-float32}.json 2>&1 | filter | grep -v "  gemm" | tee $OUT/gpu-step.log ;;
esac
cd $OUT && tar czf ../results.tgz . && rm -f ./* && mv ../results.tgz .  # one file back
true
