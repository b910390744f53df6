#!/bin/bash
# Session 26's GPU checks on the lent H200 (results in bench/results/session26/<part>/, each with its command.txt).
# The A/B rows run session 25's last tree beside this one in the same call: carry "baseline", made before the call by
#   rm -rf baseline && mkdir baseline && git archive 1c4ab0e dasksae bench/gpu_step.py bench/kernel_table.py \
#     bench/scaling_model.py bench/torch_peer.py | tar -x -C baseline        (and /baseline/ in .git/info/exclude)
#   PART=first    session 26's bfloat16 changes, none run on a GPU before: (1) every GPU test; (2) the in-process
#                 coates200 step (M=96) of session 25's tree ("before") and of this one ("after"), in turn, bfloat16
#                 three times and float32 once, each in a process of its own; (3) this tree's bfloat16 step with
#                 DASKSAE_MMA_EPILOGUE=rows (stage 1 as before); (4) the bfloat16 kernel table.  About 480 s.
#                 The changes: the backward's chunks sized by what the tensor-core path holds (7 chunks a step for
#                 17), LCN's divide and subtract in the stencil's pass, the float32 -> bfloat16 conversion four values
#                 a thread, and rows-wide for stage 1's update.
#                 Ran at 9290cff (session26/first/): 181 tests passed; bfloat16 before / after 23.1 / 21.5, 23.6 / 21.4,
#                 23.3 / 21.4 ms; float32 52.4 / 52.1; epilogue rows 21.7 ms.
#   PART=second   what session 26 built after PART=first: the objective's pooling pass with the sparsity sums in
#                 its kernel (V z^2 not written) and the backward in one chunk a coates200 stage (no input-gradient
#                 patches counted where the tensor-core transpose folds).  (1) every GPU test; (2) the in-process
#                 step before / after, bfloat16 twice and float32 once; (3) the bfloat16 kernel table.  About 460 s.
#                 Ran at 18eb4a5 (session26/second/): 181 tests passed; bfloat16 before / after 23.3 / 21.2, 23.4 / 21.1
#                 ms; float32 52.6 / 52.1.
#   PART=final    the bfloat16 rows with today's code: the limit, 1 worker (10 steps a task, pipelined), the
#                 in-process step, PyTorch eager and torch.compile, in one process; then 4 worker threads sharing the
#                 GPU with 2x2 tiles.  About 330 s.
#                 Ran at 7949891 (session26/final/): 1 worker 21.6 ms (in-process 21.1), torch.compile 106.9 ms
#                 (4.95x), eager 229.1 (10.6x); 4 threads 29.8 ms, 1.37x the in-process step.
#   PART=final2   the same bfloat16 rows with 10 and with 20 steps a task (the 1 worker at 10 spent 0.5 ms a step
#                 outside its task: the device drains at each task's end), in one process.  About 240 s.
#                 Ran at c530ad8 (session26/final2/): 1 worker 21.5 ms at 10 steps a task, 21.3 at 20; the compiled
#                 row was cut off by the end of the session's device time.
#   PART=next     (prepared for session 27) DASKSAE_TASK_END=queue, built after the device time: its GPU tests, then
#                 the bfloat16 rows (limit, 1 worker at 10 steps a task, PyTorch eager and torch.compile) with
#                 queue and with wait, one process each.  About 520 s.
#   PART=tiles    (prepared for session 27) the transpose's k64x3 tiles (DASKSAE_TENSOR_CORE_TRANSPOSE_TILES, built
#                 after the device time; g++ and NVRTC checked, 4 bytes spilled): its GPU tests, its time per stage
#                 against k32x4 (bench/gemm_layouts.py --mma-transpose), then the in-process bfloat16 step with
#                 k32x4 / k64x3 in turn, twice; then the bfloat16 step at M=512 of session 25's tree and of this one
#                 (the backward's chunks there: 5 / 21 / 18 for 8 / 41 / 18; carry baseline).  About 420 s;
#                 ALL_TESTS=1 runs every GPU test instead of the transpose's (about 520 s).
source bench/device_setup.sh
card
step() {  # step LABEL TREE DTYPE [VAR=VALUE...]: the in-process coates200 step of TREE (. or baseline), STEP_S seconds,
  # M=STEP_M (96), STEP_RUNS runs (20)
  local tree=$2
  env PYTHONPATH=/tmp/site:$PWD/$tree:$PWD/$tree/bench "${@:4}" timeout ${STEP_S:-60} python3 $tree/bench/gpu_step.py \
    --configs coates200 --minibatch ${STEP_M:-96} --modes in-process --dtypes $3 --runs ${STEP_RUNS:-20} \
    --json $OUT/gpu-step-$1-$SECONDS.json \
    2>&1 | filter | grep "in-process\|failed\|Error" | sed "s/^/$1: /" | tee -a $OUT/gpu-step.log; }
kernel_table_bfloat16() {  # the bfloat16 kernel table of the one-tile step (M=96) into $OUT/kernel-table-bfloat16.log
  timeout ${TABLE_S:-70} python3 bench/kernel_table.py --config coates200 --minibatch 96 --dtype bfloat16 --runs 3 \
    --top 40 --json $OUT/kernel-table-bfloat16.json 2>&1 | filter | head -45 > $OUT/kernel-table-bfloat16.log
  head -16 $OUT/kernel-table-bfloat16.log; }
case "${PART:-first}" in
first)
  gpu_tests ${TESTS_S:-200} tests/test_gpu.py tests/test_gpu_tiled.py
  for round in a b c; do
    step before-bfloat16-$round baseline bfloat16
    step after-bfloat16-$round . bfloat16
  done
  step before-float32 baseline float32
  step after-float32 . float32
  step after-bfloat16-epilogue-rows . bfloat16 DASKSAE_MMA_EPILOGUE=rows
  kernel_table_bfloat16 ;;
second)
  gpu_tests ${TESTS_S:-200} tests/test_gpu.py tests/test_gpu_tiled.py
  for round in a b; do
    step before-bfloat16-$round baseline bfloat16
    step after-bfloat16-$round . bfloat16
  done
  step before-float32 baseline float32
  step after-float32 . float32
  kernel_table_bfloat16 ;;
final)
  timeout ${COMPILE_S:-280} python3 bench/gpu_step.py --configs coates200 --minibatch 96 --modes limit,dasksae-1w,torch \
    --dtypes bfloat16 --precisions bfloat16 --compile --steps-per-task 10 --runs 20 --pipelined \
    --json $OUT/gpu-step-compile-bfloat16.json 2>&1 | filter | grep -v "  gemm\|cuda graphs" | tee -a $OUT/gpu-step.log
  FOUR_S=${FOUR_S:-110} four threads-bfloat16 bfloat16 ;;
final2)
  timeout ${COMPILE_S:-250} python3 bench/gpu_step.py --configs coates200 --minibatch 96 --modes limit,dasksae-1w,torch \
    --dtypes bfloat16 --precisions bfloat16 --compile --steps-per-task 10,20 --runs 20 --pipelined \
    --json $OUT/gpu-step-compile-bfloat16-k10-k20.json 2>&1 | filter | grep -v "  gemm\|cuda graphs" \
    | tee -a $OUT/gpu-step.log ;;
tiles)
  if [ -n "$ALL_TESTS" ]; then gpu_tests ${TESTS_S:-200} tests/test_gpu.py tests/test_gpu_tiled.py  # every GPU test
  else gpu_tests ${TESTS_S:-90} tests/test_gpu.py -k "tensor_core_transpose"; fi
  timeout ${GEMM_S:-90} python3 bench/gemm_layouts.py --config coates200 --minibatch 96 --precisions bfloat16 \
    --mma-transpose --runs 20 --json $OUT/gemm-transpose.json 2>&1 | filter | tee $OUT/gemm-transpose.log \
    | grep "W^T y  *mma\|then fold\|differ\|does not"
  for round in a b; do
    for tiles in k32x4 k64x3; do
      step tiles-$tiles-$round . bfloat16 DASKSAE_TENSOR_CORE_TRANSPOSE_TILES=$tiles
    done
  done
  STEP_M=512 STEP_RUNS=10 step m512-before baseline bfloat16
  STEP_M=512 STEP_RUNS=10 step m512-after . bfloat16 ;;
next)
  gpu_tests ${TESTS_S:-90} tests/test_gpu_tiled.py -k "queued or equals_cpu"
  for task_end in queue wait; do
    env DASKSAE_TASK_END=$task_end timeout ${COMPILE_S:-210} python3 bench/gpu_step.py --configs coates200 \
      --minibatch 96 --modes limit,dasksae-1w,torch --dtypes bfloat16 --precisions bfloat16 --compile \
      --steps-per-task 10 --runs 20 --pipelined --json $OUT/gpu-step-compile-bfloat16-$task_end.json 2>&1 | filter \
      | grep -v "  gemm\|cuda graphs" | sed "s/^/$task_end: /" | tee -a $OUT/gpu-step.log
  done ;;
esac
cd $OUT && tar czf ../results.tgz . && rm -f ./* && mv ../results.tgz .  # one file back (a call brings back 8 at most)
true
