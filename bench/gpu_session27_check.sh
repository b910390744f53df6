#!/bin/bash
# Session 27's GPU checks on the lent H200 (results in bench/results/session27/<part>/, each with its command.txt).
# Session 27 first ran session 26's prepared parts: PART=next and PART=tiles ALL_TESTS=1 of bench/gpu_session26_check.sh
# (session27/next/, session27/tiles/); their wins became defaults (DASKSAE_TASK_END=queue,
# DASKSAE_TENSOR_CORE_TRANSPOSE_TILES=k64x3), checked here.
#   PART=defaults  with the new defaults and no switch set: (1) the GPU tests of the queued task end, of GPU against
#                  CPU, and of the tensor-core transpose; (2) the bfloat16 rows in one process: the limit,
#                  1 worker (10 steps a task, pipelined), the in-process step, PyTorch eager and torch.compile;
#                  (3) 4 worker threads sharing the GPU with 2x2 tiles; (4) the float32 limit, in-process and 1-worker
#                  rows.  About 480 s.
#   PART=final     at the session's last code: (1) every GPU test, with the new defaults; (2) the float32 rows with the
#                  eager PyTorch peer in one process, the 1 worker pipelined (the queued task end is the default in
#                  float32 too).  About 320 s; at session 27's RATIO_S=135 the PyTorch row was cut off (give it ~200).
#   PART=next      (prepared for session 28) what session 27 could not fit: (1) the float32 rows with the eager and
#                  compiled PyTorch peers in one process, the 1 worker pipelined (the float32 5x-eager margin with
#                  the queued task end: session 27's 52.6 ms against session 25's eager 269.2 would be 5.12x, but a
#                  ratio counts only from one run); (2) the bfloat16 kernel table with today's defaults (where the
#                  0.55 ms of the k64x3 tiles and the task end's drain left the step); (3) 4 worker threads in
#                  bfloat16 with py-spy on the GIL (bench/gil_sampler.py; py-spy's wheel in .whl): what the host
#                  does in the 1.36x step.  About 560 s.
source bench/device_setup.sh
card
case "${PART:-defaults}" in
defaults)
  gpu_tests ${TESTS_S:-100} tests/test_gpu.py tests/test_gpu_tiled.py -k "queued or equals_cpu or tensor_core_transpose"
  timeout ${COMPILE_S:-230} python3 bench/gpu_step.py --configs coates200 --minibatch 96 --modes limit,dasksae-1w,torch \
    --dtypes bfloat16 --precisions bfloat16 --compile --steps-per-task 10 --runs 20 --pipelined \
    --json $OUT/gpu-step-compile-bfloat16.json 2>&1 | filter | grep -v "  gemm\|cuda graphs" | tee -a $OUT/gpu-step.log
  FOUR_S=${FOUR_S:-110} four threads-bfloat16 bfloat16
  one_worker_float32 ${FLOAT32_S:-90} ;;
next)
  ratio_float32 ${RATIO_S:-300} --pipelined --compile
  TABLE_S=${TABLE_S:-70}
  timeout $TABLE_S python3 bench/kernel_table.py --config coates200 --minibatch 96 --dtype bfloat16 --runs 3 \
    --top 40 --json $OUT/kernel-table-bfloat16.json 2>&1 | filter | head -45 > $OUT/kernel-table-bfloat16.log
  head -16 $OUT/kernel-table-bfloat16.log
  PY_SPY=$(ls -d /tmp/site/bin/py-spy 2>/dev/null || command -v py-spy) FOUR_S=${FOUR_S:-150} \
    four threads-bfloat16-gil bfloat16 --gil-samples ;;
final)
  gpu_tests ${TESTS_S:-175} tests/test_gpu.py tests/test_gpu_tiled.py
  ratio_float32 ${RATIO_S:-135} --pipelined ;;
esac
cd $OUT && tar czf ../results.tgz . && rm -f ./* && mv ../results.tgz .  # one file back (a call brings back 8 at most)
true
