#!/bin/bash
# Session 53's GPU checks (results in bench/results/session53/<part>/, each with its command.txt).
#   (session 53's first two calls ran session 52's script: PART=next in next/, PART=ratio SETTING=a-registers-hoisted
#   in ratio/; w32-a-registers-hoisted, the winner, is the float32 products' default since)
#   PART=final (about 560 s): every GPU test at the new defaults, then the issue's table in one process (the limit,
#     1 worker, 4 worker threads with 2x2 tiles, the eager and compiled PyTorch peers; float32 and bfloat16; coates200,
#     M=96), for the README
#   PART=graphs (about 140 s, for session 53's last device time): the in-process bfloat16 step with its one tile's
#     step replayed as CUDA graphs (DASKSAE_CUDA_GRAPHS=1; auto leaves them off for one worker a GPU), first
#     (compiling the kernels), then at the defaults (session 44's one-tile table had the GPU idle 8.2% of a profiled
#     step, 0.49 ms of it after the losses' read and 0.14 ms before the stages' first products)
#   PART=bfloat16 (about 300 s): where the bfloat16 step's time goes (the one-tile kernel table with the GPU's idle
#     gaps), then the issue's bfloat16 rows (the limit, 1 worker, 4 worker threads) in one process
source bench/device_setup.sh
card
case "${PART:-final}" in
final)
  gpu_tests ${TESTS_S:-210}
  tail -4 $OUT/gpu-tests.log
  issue_table ${TABLE_S:-330} --compile ;;
graphs)
  STEP_GRAPHS=1 STEP_DTYPE=bfloat16 STEP_S=${WARM_S:-95} in_process bfloat16-graphs DASKSAE_CUDA_GRAPHS=1
  STEP_DTYPE=bfloat16 STEP_S=${STEP_S:-40} in_process bfloat16-defaults DASKSAE_CUDA_GRAPHS=auto ;;
bfloat16)
  TABLE_S=${TABLE_S:-120} table_with_gaps one-tile
  timeout ${ROWS_S:-170} python3 bench/gpu_step.py --configs coates200 --minibatch 96 \
    --modes limit,dasksae-1w,dasksae-4w-threads --dtypes bfloat16 --steps-per-task 10 --steps-per-task-4w 10 \
    --runs 20 --runs-4w 5 --json $OUT/gpu-step-bfloat16.json 2>&1 | filter | grep -v "  gemm" | tee $OUT/gpu-step.log ;;
esac
cd $OUT && tar czf ../results.tgz . && rm -f ./* && mv ../results.tgz .  # one file back
true
