#!/bin/bash
# Session 31's GPU checks on the lent H200 (results in bench/results/session31/<part>/, each with its command.txt).
# Session 31 first ran PART=first and PART=next of bench/gpu_session29_check.sh (session31/first/, session31/next/):
# with DASKSAE_ONE_LAUNCHER=1 a tile thread no longer waits for messages, and the four threads' step waits for the
# device instead (26.2-26.4 against 26.7 ms).  So what is left is GPU time:
#   PART=table   the 4 threads' bfloat16 kernel table with the launcher (how busy the GPU is, and with what), then
#                4 worker threads in bfloat16 with the launcher off and on, each a process of its own.  About 330 s.
#   PART=ratio16 the bfloat16 rows with both PyTorch peers in one process.  About 250 s.
#   PART=default with DASKSAE_ONE_LAUNCHER=1 the default (after PART=table): the tiled GPU tests at the defaults, then
#                4 worker threads in bfloat16 at the defaults and with the launcher off.  About 350 s.
source bench/device_setup.sh
card
case "${PART:-table}" in
table)
  DASKSAE_ONE_LAUNCHER=1 timeout ${TABLE_S:-130} python3 bench/kernel_table.py --config coates200 --minibatch 96 \
    --dtype bfloat16 --tiles 2x2 --workers 4 --runs 3 --top 60 --json $OUT/kernel-table-bfloat16-4w-launcher.json \
    2>&1 | filter | head -65 > $OUT/kernel-table-bfloat16-4w-launcher.log
  head -12 $OUT/kernel-table-bfloat16-4w-launcher.log
  DASKSAE_ONE_LAUNCHER=0 FOUR_S=${FOUR_S:-90} four launcher-off bfloat16
  DASKSAE_ONE_LAUNCHER=1 FOUR_S=${FOUR_S:-90} four launcher-on bfloat16 ;;
ratio16)  # the bfloat16 rows with both PyTorch peers in one process (the 5x compiled target's margin)
  timeout ${RATIO_S:-330} python3 bench/gpu_step.py --configs coates200 --minibatch 96 --modes limit,dasksae-1w,torch \
    --dtypes bfloat16 --precisions bfloat16 --steps-per-task 10 --runs 20 --pipelined --compile \
    --json $OUT/gpu-step-ratio-bfloat16.json 2>&1 | filter | grep -v "  gemm\|cuda graphs" | tee -a $OUT/gpu-step.log ;;
default)
  gpu_tests ${TESTS_S:-200} tests/test_gpu_tiled.py
  FOUR_S=${FOUR_S:-90} four defaults bfloat16
  DASKSAE_ONE_LAUNCHER=0 FOUR_S=${FOUR_S:-90} four launcher-off bfloat16 ;;
esac
cd $OUT && tar czf ../results.tgz . && rm -f ./* && mv ../results.tgz .  # one file back
true
