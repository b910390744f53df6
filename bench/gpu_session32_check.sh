#!/bin/bash
# Session 32's GPU checks on the lent H200 (results in bench/results/session32/<part>/, each with its command.txt).
# Session 31 left the four worker threads' bfloat16 step (one launcher, the default) bound by the device: kernels
# 23.9 ms, the GPU busy 23.6 ms and idle 14.4% of a 27.6 ms profiled step.  The 1.25x target needs 25.2 ms.
#   PART=gaps  where the idle time falls: the kernel tables (bench/kernel_table.py, now with the GPU's idle gaps
#              by length and by the kernels on either side) of the 4 threads and of the one tile, bfloat16.
#              About 250 s.
#   PART=queue  a tile task of SPMD steps now returns with its steps queued (DASKSAE_TASK_END=queue, as one tile's
#              did since session 27), so the device need not drain between one task of ten steps and the next: the
#              tiled GPU tests, then 4 worker threads in bfloat16 with TASK_END=wait (as before), queue, and queue
#              with each group submitted before the last one's losses are read (--pipelined, as dasksae train and
#              the 1-worker row do), each a process of its own.  About 450 s.
#   PART=cluster WHEELS=.whl-ucx (carry .whl-ucx: .whl less zarr, numcodecs and py-spy, plus RMM and UCXX from
#              ../shared/gpu/fetch-wheels.sh --ucx): the cluster `dasksae train --gpu` starts, with CuPy on an RMM
#              pool, over TCP and over UCX (the default where distributed-ucxx is installed); then
#              cluster/local-gpus.sh (a scheduler and a dask-cuda worker over UCX, RMM pool for CuPy) and a short
#              `dasksae train --scheduler-file` run on it.  About 200 s.
#   PART=final WHEELS=.whl-ucx (after PART=queue, which put the 4 threads at 24.7 ms pipelined against 26.5 before):
#              the pipelined row again, 20 groups, their mean (bench/step_timing.py: pipelined reports come two
#              groups at a time); the 4 threads' pipelined kernel table with its idle gaps; the row again in a
#              process of its own where TWICE is set; then PART=cluster.  About 300 s (TWICE: 370).
#   PART=one16 the bfloat16 limit and 1-worker pipelined rows (20 groups of 10 steps), the row now the mean of its
#              groups (it was their median through session 31).  About 90 s.
source bench/device_setup.sh
card
table() { TABLE_S=${TABLE_S:-150} table_with_gaps "$@"; }
cluster() {
  gpu_tests ${TESTS_S:-200} tests/test_gpu_tiled.py -k cluster_gpu_starts -rs
  export PATH=/tmp/site/bin:$PATH
  # its own process group: the script's exit trap kills its group
  rm -f /tmp/scheduler.json  # a warm machine keeps an earlier call's (and may keep its scheduler's port)
  PORT=${PORT:-8797} SCHEDULER_FILE=/tmp/scheduler.json setsid timeout ${SCRIPT_S:-150} bash cluster/local-gpus.sh > $OUT/local-gpus.log 2>&1 &
  group=$!
  for _ in $(seq 40); do [[ -s /tmp/scheduler.json ]] && break; sleep 1; done; sleep 8
  timeout 120 python3 -m dasksae.cli train --scheduler-file /tmp/scheduler.json --gpu --config tiny --tiles 1x1 \
    --steps 40 2>&1 | filter | tail -15 | tee $OUT/train-on-local-gpus.log
  kill -- -$group 2>/dev/null; sleep 2; tail -20 $OUT/local-gpus.log; }
case "${PART:-gaps}" in
gaps)
  table 4w --tiles 2x2 --workers 4 --pipelined
  table 1tile ;;
queue)
  gpu_tests ${TESTS_S:-220} tests/test_gpu_tiled.py
  DASKSAE_TASK_END=wait FOUR_S=${FOUR_S:-90} four wait bfloat16
  FOUR_S=${FOUR_S:-90} four queue bfloat16
  FOUR_S=${FOUR_S:-90} four queue-pipelined bfloat16 --pipelined ;;
cluster)
  cluster ;;
one16)
  timeout ${ONE_S:-150} python3 bench/gpu_step.py --configs coates200 --minibatch 96 --modes limit,dasksae-1w \
    --dtypes bfloat16 --steps-per-task 10 --runs 20 --pipelined --json $OUT/gpu-step-1w-bfloat16.json 2>&1 | filter \
    | grep -v "  gemm\|cuda graphs" | tee -a $OUT/gpu-step.log ;;
script)  # the local-gpus.sh half of cluster() alone (PART=final's first run asked for 2x2 tiles of its one worker)
  gpu_tests() { :; }; cluster ;;
final)
  FOUR_S=${FOUR_S:-100} four pipelined-1 bfloat16 --pipelined --runs-4w 20
  table 4w-pipelined --tiles 2x2 --workers 4 --pipelined
  [[ -n $TWICE ]] && FOUR_S=${FOUR_S:-100} four pipelined-2 bfloat16 --pipelined --runs-4w 20
  cluster ;;
esac
cd $OUT && tar czf ../results.tgz . && rm -f ./* && mv ../results.tgz .  # one file back
true
