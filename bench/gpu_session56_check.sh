#!/bin/bash
# Session 56's GPU checks (results in bench/results/session56/<part>/, each with its command.txt).
#   PART=check (about 480 s; TOTAL=SECONDS for less): DASKSAE_WRITE_ONCE (opt-in; session 55's maps written once, and session 56's one-tile
#     reconstruction error made in the filter's task, the bfloat16 fold subtracting x as it writes): the GPU tests of
#     the folds, the LCN, write-once and the tiled runs with it on (TESTS_S seconds); then the pipelined 1-worker
#     bfloat16 rows on and off, each in a process of its own; then the float32 row on where time is left
#   (session 56 ran PART=check at 7e45fa1, then the pipelined 1-worker bfloat16 row alone: bench/results/session56/;
#   DASKSAE_WRITE_ONCE=1 is now the default)
#   PART=issue (for session 57, about 180 s a dtype): the issue's table at the new default in one process, pipelined:
#     limit, 1 worker, 4 worker threads 2x2, PyTorch eager and compiled, in DTYPE (bfloat16 unless set)
#   PART=rest (about 330 s): every GPU test at the new default (the CUDA-graph tests and the bfloat16 tiled runs did
#     not run with it on in session 56)
#   PART=table (about 150 s): the bfloat16 kernel table, one Dask worker, pipelined (WRITE_ONCE=0 for the old path)
source bench/device_setup.sh
card
case "${PART:-check}" in
check)
  DASKSAE_WRITE_ONCE=1 gpu_tests ${TESTS_S:-200} tests/test_gpu.py tests/test_gpu_tiled.py \
    -k "transpose or written_once or subtracts or equals_cpu or follows_float32 or graphs or lcn or pooling"
  tail -6 $OUT/gpu-tests.log
  ROW_S=85 one_worker bfloat16-on bfloat16 DASKSAE_WRITE_ONCE=1
  ROW_S=85 one_worker bfloat16-off bfloat16 DASKSAE_WRITE_ONCE=0
  total=${TOTAL:-480}  # (the seconds the call may take)
  [ $SECONDS -lt $((total - 80)) ] && ROW_S=$((total - SECONDS)) one_worker float32-on float32 DASKSAE_WRITE_ONCE=1 ;;
issue)
  PART=table DTYPE=${DTYPE:-bfloat16} exec bash bench/gpu_session54_check.sh ;;  # (its own setup and tar)
rest)
  gpu_tests ${TESTS_S:-330}
  tail -6 $OUT/gpu-tests.log ;;
table)
  export DASKSAE_WRITE_ONCE=${WRITE_ONCE:-1}
  TABLE_S=${TABLE_S:-140} table_with_gaps write-once-$DASKSAE_WRITE_ONCE --workers 1 --dask --pipelined \
    --steps-per-task 10 ;;
esac
cd $OUT && tar czf ../results.tgz . && rm -f ./* && mv ../results.tgz .  # one file back
true
