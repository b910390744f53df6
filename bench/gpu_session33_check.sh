#!/bin/bash
# Session 33's GPU checks on the lent H200 (results in bench/results/session33/<part>/, each with its command.txt).
#   PART=first  the whole GPU suite at this commit (its last full run was session 31's, before session 32 queued the
#              SPMD tasks' ends), then the bfloat16 limit and 1-worker pipelined rows, 20 groups of 10 steps, the row
#              the mean of its groups (through session 31 it was their median; session 32's PART=one16, not run
#              then).  About 250 s.
#   PART=side   DASKSAE_UPDATE_STREAM (new): the bfloat16 tensor-core update of each stage on a side stream of the
#              tile's stream, beside the lower stages' backward (1; priority: the tile's stream at the highest
#              priority).  Its GPU tests (bit for bit against the update in line), the in-process bfloat16 step with
#              0, 1 and priority twice over (each a process of its own), the kernel table with priority (kernels
#              against GPU busy time: what overlapped), and the tiled GPU tests with DASKSAE_UPDATE_STREAM=priority
#              (4 worker threads: their captured CUDA graphs keep the update in line).  About 450 s.
source bench/device_setup.sh
card
one16() {  # one16 LABEL [VAR=VALUE...]: the bfloat16 limit and 1-worker pipelined rows, coates200, M=96
  env "${@:2}" timeout ${ONE_S:-150} python3 bench/gpu_step.py --configs coates200 --minibatch 96 \
    --modes limit,dasksae-1w --dtypes bfloat16 --steps-per-task 10 --runs 20 --pipelined \
    --json $OUT/gpu-step-1w-bfloat16-$1.json 2>&1 | filter | grep -v "  gemm\|cuda graphs" | sed "s/^/$1: /" \
    | tee -a $OUT/gpu-step.log; }
table() {  # table LABEL [VAR=VALUE...]: the bfloat16 kernel table of the one-tile coates200 step, M=96
  env "${@:2}" timeout ${TABLE_S:-120} python3 bench/kernel_table.py --config coates200 --minibatch 96 \
    --dtype bfloat16 --runs 3 --top 40 --json $OUT/kernel-table-bfloat16-$1.json 2>&1 | filter | head -80 \
    > $OUT/kernel-table-bfloat16-$1.log
  head -3 $OUT/kernel-table-bfloat16-$1.log; grep -i "update\|busy\|idle" $OUT/kernel-table-bfloat16-$1.log | head; }
tests_as() {  # tests_as LABEL [VAR=VALUE...] -- PYTEST ARGS: GPU tests under switches into $OUT/gpu-tests-LABEL.log
  local label=$1; shift; local vars=(); while [[ $1 != -- ]]; do vars+=("$1"); shift; done; shift
  env "${vars[@]}" timeout ${TESTS_S:-200} python3 -m pytest -m gpu -q -p no:cacheprovider -p no:logging --tb=short \
    "$@" 2>&1 | tail -30 > $OUT/gpu-tests-$label.log
  echo "$label: $(tail -1 $OUT/gpu-tests-$label.log)"; }
case "${PART:-first}" in
first)
  gpu_tests ${TESTS_S:-300}
  one16 default ;;
side)
  tests_as side -- tests/test_gpu.py -k "side_stream or tensor_core_update"
  for round in 1 2; do
    for setting in 0 1 priority; do STEP_DTYPE=bfloat16 in_process stream-$setting DASKSAE_UPDATE_STREAM=$setting; done
  done
  table priority DASKSAE_UPDATE_STREAM=priority
  tests_as tiled-priority DASKSAE_UPDATE_STREAM=priority -- tests/test_gpu_tiled.py ;;
esac
cd $OUT && tar czf ../results.tgz . && rm -f ./* && mv ../results.tgz .  # one file back
true
