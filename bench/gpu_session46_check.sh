#!/bin/bash
# Session 46's GPU checks (results in bench/results/session46/<part>/, each with its command.txt).
#   PART=trace (about 150 s): the 4 worker threads' bfloat16 kernel table (2x2 tiles, pipelined), with every kernel's
#     CUDA stream and times written to $OUT/trace-4w.json (bench/kernel_table.py --trace), to see which tiles' kernels
#     run side by side and where a part-empty last wave is left unfilled
#   PART=order (about 350 s): with each tile's sends of a layer made before it waits for its own strips (the tiles'
#     runs of a layer no longer wait for each other): the GPU tests of the tiled step, the 4 worker threads' kernel
#     table with its trace, and the 4-worker row (with the in-process step) ROUNDS times (1)
#   PART=side (about 120 s a round): the in-process bfloat16 step with the update on a side stream (DASKSAE_UPDATE_STREAM=1,
#     priority) against in line (0), ROUNDS (1) times in turn: whether the one-tile step's small kernels fill in beside the
#     update now that the products are on wgmma (session 34, before them: no gain)
source bench/device_setup.sh
card
case "${PART:-trace}" in
trace)
  TABLE_S=${TABLE_S:-120} table_with_gaps 4w --tiles 2x2 --workers 4 --pipelined --trace $OUT/trace-4w.json | head -3
  grep "at once" $OUT/kernel-table-bfloat16-4w.log ;;
order)
  gpu_tests ${TESTS_S:-120} tests/test_gpu_tiled.py
  tail -3 $OUT/gpu-tests.log
  TABLE_S=${TABLE_S:-100} table_with_gaps 4w --tiles 2x2 --workers 4 --pipelined --trace $OUT/trace-4w.json | head -3
  grep "at once" $OUT/kernel-table-bfloat16-4w.log
  for round in $(seq ${ROUNDS:-1}); do FOUR_S=${FOUR_S:-110} four round$round bfloat16; done ;;
side)
  for round in $(seq ${ROUNDS:-1}); do
    for mode in 0 1 priority; do STEP_DTYPE=bfloat16 in_process stream-$mode DASKSAE_UPDATE_STREAM=$mode; done
  done ;;
esac
cd $OUT && tar czf ../results.tgz . && rm -f ./* && mv ../results.tgz .  # one file back
true
