#!/bin/bash
# Session 53's GPU checks (results in bench/results/session53/<part>/, each with its command.txt).
#   (session 53's first two calls ran session 52's script: PART=next in next/, PART=ratio SETTING=a-registers-hoisted
#   in ratio/; w32-a-registers-hoisted, the winner, is the float32 products' default since)
#   PART=final (about 560 s): every GPU test at the new defaults, then the issue's table in one process (the limit,
#     1 worker, 4 worker threads with 2x2 tiles, the eager and compiled PyTorch peers; float32 and bfloat16; coates200,
#     M=96), for the README (issue_table's rows were not pipelined then: each group of 10 steps is waited for before
#     the next is submitted, where dasksae train, and sessions 42-46's pipelined rows, submit the next first)
#   PART=graphs (about 140 s, for session 53's last device time): the in-process bfloat16 step with its one tile's
#     step replayed as CUDA graphs (DASKSAE_CUDA_GRAPHS=1; auto leaves them off for one worker a GPU), first
#     (compiling the kernels), then at the defaults (session 44's one-tile table had the GPU idle 8.2% of a profiled
#     step, 0.49 ms of it after the losses' read and 0.14 ms before the stages' first products)
#   PART=next (about 420 s; for session 54): (a) the issue's 1-worker rows (10 steps a task, pipelined as dasksae
#     train runs them: each group submitted before the last one's losses are read; PART=final's were not) in bfloat16
#     and float32 with the tile's step replayed as CUDA graphs against the defaults, each in a process of its own
#     (PART=graphs: the in-process bfloat16 step 21.8 ms with graphs against 22.1); (b) tf32 W x, U g_r and W^T y on
#     w32-a-registers-hoisted (DASKSAE_FLOAT32_WGMMA_FORWARD=1, _TRANSPOSE=1; auto keeps tf32 on mma.sync's split,
#     which beat w32-split-2 in one term in session 49) against the defaults, the in-process tf32 step and the tf32
#     product floors
#   PART=bfloat16 (about 420 s): where the bfloat16 step's time goes: the one-tile kernel table with the GPU's idle
#     gaps, in-process (a sync a step) and on one Dask worker thread pipelined as dasksae train runs it (10 steps a
#     task, bench/kernel_table.py --dask), then the issue's bfloat16 rows (the limit, 1 worker, 4 worker threads;
#     pipelined) in one process
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
next)
  ROW_S=${WARM_S:-110} one_worker bfloat16-defaults bfloat16 DASKSAE_CUDA_GRAPHS=auto
  one_worker bfloat16-graphs bfloat16 DASKSAE_CUDA_GRAPHS=1
  ROW_S=${WARM_S:-100} one_worker float32-defaults float32 DASKSAE_CUDA_GRAPHS=auto
  one_worker float32-graphs float32 DASKSAE_CUDA_GRAPHS=1
  STEP_DTYPE=tf32 STEP_S=60 in_process tf32-defaults DASKSAE_FLOAT32_WGMMA_FORWARD=auto
  STEP_DTYPE=tf32 STEP_S=60 in_process tf32-wgmma DASKSAE_FLOAT32_WGMMA_FORWARD=1 DASKSAE_FLOAT32_WGMMA_TRANSPOSE=1
  tf32_rows=forward-tf32,transpose-tf32,forward-tf32-w32-a-registers-hoisted,transpose-tf32-w32-a-registers-hoisted
  timeout ${PRODUCT_S:-45} python3 bench/product_floor.py --precision float32 --config coates200 --minibatch 96 \
    --runs 5 --rows $tf32_rows \
    --json $OUT/product-floor-tf32.json 2>&1 | filter | tee $OUT/product-floor.log ;;
bfloat16)
  TABLE_S=${TABLE_S:-120} table_with_gaps one-tile
  TABLE_S=${TABLE_S:-120} table_with_gaps one-worker-pipelined --workers 1 --dask --pipelined --steps-per-task 10
  timeout ${ROWS_S:-170} python3 bench/gpu_step.py --configs coates200 --minibatch 96 \
    --modes limit,dasksae-1w,dasksae-4w-threads --dtypes bfloat16 --steps-per-task 10 --steps-per-task-4w 10 \
    --runs 20 --runs-4w 5 --pipelined --json $OUT/gpu-step-bfloat16.json 2>&1 | filter | grep -v "  gemm" | tee $OUT/gpu-step.log ;;
esac
cd $OUT && tar czf ../results.tgz . && rm -f ./* && mv ../results.tgz .  # one file back
true
