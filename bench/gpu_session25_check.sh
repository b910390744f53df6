#!/bin/bash
# Session 25's GPU checks on the lent H200 (results in bench/results/session25/<part>/, each with its command.txt).
# Session 25's first two calls were PART=compile and PART=next of bench/gpu_session24_check.sh.
#   PART=first    (1) dasksae's 1 worker in bfloat16 and float32 with the tile step replayed as CUDA graphs
#                 (DASKSAE_CUDA_GRAPHS=1) against the default (auto: calls, one worker a GPU), in turn, twice: the one-tile
#                 bfloat16 profile spends 6.7% of the step with the GPU idle (session24/next).  (2) The tensor-core
#                 forward and transpose tests (DASKSAE_TENSOR_CORE_* now auto / 1 / 0).  (3) The in-process bfloat16
#                 coates200 step at M = 128, 192 and 576 with both kernels on (=1) and off (=0), in turn: where they win
#                 (at M=96 on, at M=512 off, session25/next).  (4) The bfloat16 kernel table at M=512.  About 540 s.
#                 Ran at 041ba39 (session25/first/): timed out at 600 s.  The 1-worker rows each took more than their
#                 75 s (only the in-process rows and one graphs row came back), and the call brings back 8 files at
#                 most, so the log and the tests' did not: now every part ends in one results.tgz.
#   PART=second   (2), (3) and (4) of PART=first.  About 300 s.  Ran at 7d30d48 (session25/second/): 10 tests
#                 passed; on / off M=128 32.6 / 30.8 ms, M=192 38.6 / 40.5, M=576 107.4 / 107.1.
#   PART=split    (prepared for session 26) at M=512, which of the two kernels loses with a part-full tile: the
#                 in-process bfloat16 step with the forward only (FORWARD=1 TRANSPOSE=0), the transpose only (0 1) and
#                 neither (auto), in turn, twice: the M=512 kernel table has cuBLAS's W^T y and its fold at 25.7 ms,
#                 which the transpose kernel replaces.  About 330 s.
source bench/device_setup.sh
card
one_worker() {  # one_worker LABEL DTYPE [VAR=VALUE...]: dasksae's 1 worker (10 steps a task, pipelined), ONE_S seconds (75 was too few)
  env "${@:3}" timeout ${ONE_S:-150} python3 bench/gpu_step.py --configs coates200 --minibatch 96 --modes dasksae-1w \
    --dtypes $2 --steps-per-task 10 --runs 20 --pipelined --json $OUT/gpu-step-1w-$1-$SECONDS.json 2>&1 | filter \
    | grep "dasksae-1w\|in-process\|inside\|cuda graphs\|failed\|Error" | sed "s/^/$1: /" | tee -a $OUT/gpu-step.log; }
tensor_cores_by_minibatch() {  # (2), (3) and (4) of PART=first
  gpu_tests ${TESTS_S:-90} tests/test_gpu.py -k "tensor_core_forward or tensor_core_transpose or minibatch_of_128"
  for batch in 128 192 576; do
    for tensor_cores in 1 0; do
      env DASKSAE_TENSOR_CORE_FORWARD=$tensor_cores DASKSAE_TENSOR_CORE_TRANSPOSE=$tensor_cores timeout ${STEP_S:-45} \
        python3 bench/gpu_step.py --configs coates200 --minibatch $batch --modes in-process --dtypes bfloat16 --runs 10 \
        --json $OUT/gpu-step-m$batch-tensor-cores-$tensor_cores.json 2>&1 | filter | grep "in-process\|failed\|Error" \
        | sed "s/^/m$batch-tensor-cores-$tensor_cores: /" | tee -a $OUT/gpu-step.log
    done
  done
  timeout ${TABLE_S:-70} python3 bench/kernel_table.py --config coates200 --minibatch 512 --dtype bfloat16 --runs 3 \
    --top 30 --json $OUT/kernel-table-bfloat16-m512.json 2>&1 | filter | head -35 > $OUT/kernel-table-bfloat16-m512.log
  head -14 $OUT/kernel-table-bfloat16-m512.log; }
case "${PART:-first}" in
first)
  for round in a b; do
    one_worker bfloat16-auto-$round bfloat16
    one_worker bfloat16-graphs-$round bfloat16 DASKSAE_CUDA_GRAPHS=1
  done
  one_worker float32-auto float32
  one_worker float32-graphs float32 DASKSAE_CUDA_GRAPHS=1
  tensor_cores_by_minibatch ;;
second)
  tensor_cores_by_minibatch ;;
split)
  for round in a b; do
    for pair in "1 0" "0 1" "auto auto"; do
      set -- $pair
      env DASKSAE_TENSOR_CORE_FORWARD=$1 DASKSAE_TENSOR_CORE_TRANSPOSE=$2 timeout ${STEP_S:-50} python3 bench/gpu_step.py \
        --configs coates200 --minibatch 512 --modes in-process --dtypes bfloat16 --runs 10 \
        --json $OUT/gpu-step-m512-forward-$1-transpose-$2-$round.json 2>&1 | filter | grep "in-process\|failed\|Error" \
        | sed "s/^/m512-forward-$1-transpose-$2-$round: /" | tee -a $OUT/gpu-step.log
    done
  done ;;
esac
cd $OUT && tar czf ../results.tgz . && rm -f ./* && mv ../results.tgz .  # one file back (a call brings back 8 at most)
true
