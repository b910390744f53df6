#!/bin/bash
# Session 33's GPU checks on the lent H200 (results in bench/results/session33/<part>/, each with its command.txt).
#   PART=first  the whole GPU suite at this commit (its last full run was session 31's, before session 32 queued the
#              SPMD tasks' ends), then the bfloat16 limit and 1-worker pipelined rows, 20 groups of 10 steps, the row
#              the mean of its groups (through session 31 it was their median; session 32's PART=one16, not run
#              then).  About 250 s.
source bench/device_setup.sh
card
one16() {  # one16 LABEL [VAR=VALUE...]: the bfloat16 limit and 1-worker pipelined rows, coates200, M=96
  env "${@:2}" timeout ${ONE_S:-150} python3 bench/gpu_step.py --configs coates200 --minibatch 96 \
    --modes limit,dasksae-1w --dtypes bfloat16 --steps-per-task 10 --runs 20 --pipelined \
    --json $OUT/gpu-step-1w-bfloat16-$1.json 2>&1 | filter | grep -v "  gemm\|cuda graphs" | sed "s/^/$1: /" \
    | tee -a $OUT/gpu-step.log; }
case "${PART:-first}" in
first)
  gpu_tests ${TESTS_S:-300}
  one16 default ;;
esac
cd $OUT && tar czf ../results.tgz . && rm -f ./* && mv ../results.tgz .  # one file back
true
