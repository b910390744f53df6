#!/bin/bash
# Session 55's GPU checks (results in bench/results/session55/<part>/, each with its command.txt).
#   (session 55's first calls ran session 54's PART=dots, then PART=table for bfloat16 and float32 and PART=largest
#   with DASKSAE_FUSED_ROW_DOTS=1 DASKSAE_CODES_FROM_MAPS=1, now the defaults)
#   PART=write-once (about 560 s; for session 56): DASKSAE_WRITE_ONCE (opt-in, new in session 55: W^T y's map and
#     the input gradient from empty, written whole by the fold's kernel; one tile's LCN backward subtracting 2/M e as
#     it reads, with no window made): every GPU test (TESTS_S seconds) with it on; then the pipelined 1-worker
#     bfloat16 rows on and off, each in a process of its own, and the float32 row on where time is left. If the
#     tests pass and it wins, make it the default
#   PART=table (about 150 s; after write-once): the bfloat16 kernel table on one Dask worker, pipelined, as
#     dasksae train runs it, with DASKSAE_WRITE_ONCE=1 (WRITE_ONCE=0 for the default): where the step's time goes
#   PART=lean (about 290 s, for what device time is left): the GPU tests of the folds, of write-once and the tiled
#     ones (TESTS_S seconds), then the pipelined 1-worker bfloat16 rows on and off
#   PART=least (about 185 s): the GPU tests of write-once and the folds (TESTS_S seconds), then the pipelined
#     1-worker bfloat16 row with it on
source bench/device_setup.sh
card
case "${PART:-write-once}" in
write-once)
  DASKSAE_WRITE_ONCE=1 gpu_tests ${TESTS_S:-320}
  tail -4 $OUT/gpu-tests.log
  ROW_S=${WARM_S:-100} one_worker bfloat16-on bfloat16 DASKSAE_WRITE_ONCE=1
  ROW_S=90 one_worker bfloat16-off bfloat16 DASKSAE_WRITE_ONCE=0
  [ $SECONDS -lt 480 ] && ROW_S=$((575 - SECONDS)) one_worker float32-on float32 DASKSAE_WRITE_ONCE=1 ;;
lean)
  DASKSAE_WRITE_ONCE=1 gpu_tests ${TESTS_S:-120} tests/test_gpu.py tests/test_gpu_tiled.py \
    -k "transpose or written_once or subtracts or equals_cpu or follows_float32 or graphs"
  tail -4 $OUT/gpu-tests.log
  ROW_S=80 one_worker bfloat16-on bfloat16 DASKSAE_WRITE_ONCE=1
  ROW_S=$((285 - SECONDS)) one_worker bfloat16-off bfloat16 DASKSAE_WRITE_ONCE=0 ;;
table)
  export DASKSAE_WRITE_ONCE=${WRITE_ONCE:-1}
  TABLE_S=${TABLE_S:-140} table_with_gaps write-once-$DASKSAE_WRITE_ONCE --workers 1 --dask --pipelined \
    --steps-per-task 10 ;;
least)
  gpu_tests ${TESTS_S:-100} tests/test_gpu.py -k "written_once or subtracts or transpose"
  tail -4 $OUT/gpu-tests.log
  ROW_S=$((185 - SECONDS)) one_worker bfloat16-on bfloat16 DASKSAE_WRITE_ONCE=1 ;;
esac
cd $OUT && tar czf ../results.tgz . && rm -f ./* && mv ../results.tgz .  # one file back
true
