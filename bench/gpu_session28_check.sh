#!/bin/bash
# Session 28's GPU checks on the lent H200 (results in bench/results/session28/<part>/, each with its command.txt).
# Session 28 first ran PART=next of bench/gpu_session27_check.sh (session28/next/).
#   PART=probe   host-side levers, each in a process of its own: (1) the in-process bfloat16 coates200 step (M=96)
#                replayed as one tile's CUDA graphs (DASKSAE_CUDA_GRAPHS=1) against as calls (the default for one
#                tile), twice in turn: what the 163 launches' gaps cost (GPU idle 7.8% of the profiled step in
#                session28/next); (2) 4 worker threads in bfloat16 with the groups pipelined, as the 1-worker row is;
#                (3) 4 worker threads in bfloat16 with a 0.5 ms GIL switch interval (5 ms default).  About 450 s.
#   PART=gil     DASKSAE_DRIVER_GIL=hold (the four threads' short driver calls keep the GIL): (1) its GPU test and the
#                driver's and graphs' tests; (2) 4 worker threads in bfloat16, release and hold in turn, twice, each a
#                process of its own (the row varies between processes).  About 500 s.
#   PART=table4w the kernel table of 4 worker threads on 2x2 tiles in bfloat16 (last taken in session 24): how much GPU
#                time the four tiles add to the one tile's (session28/next), and in what.  About 120 s.
#   PART=final   at the session's last code: (1) every GPU test (the default path's event waits, records, graph
#                launches and one-array copies now go through kernels/driver_launch.py; the update's cache-streaming
#                epilogues against NumPy); (2) the GPU tests that train in bfloat16, with DASKSAE_UPDATE_CACHE_HINTS=1;
#                (3) the in-process bfloat16 step with the update's cache hints off and on, each a process of its
#                own, twice in turn; (4) the bfloat16 kernel table with them on (the update's time against
#                session28/next's 8.93 ms).  About 420 s.
#   PART=next    (prepared for session 29) DASKSAE_FUSED_CUTS=1, built after session 28's device time: (1) the GPU tests
#                of CUDA graphs, GPU against CPU and the driver calls with it on; (2) 4 worker threads in bfloat16 with
#                it off and on, each a process of its own, twice in turn; (3) the four threads' kernel table with it
#                on (the strip copies' launches against session28/table4w's 280).  About 540 s.
source bench/device_setup.sh
card
case "${PART:-probe}" in
probe)
  for round in 1 2; do
    STEP_DTYPE=bfloat16 in_process calls
    STEP_DTYPE=bfloat16 STEP_GRAPHS=1 in_process graphs DASKSAE_CUDA_GRAPHS=1
  done
  FOUR_S=${FOUR_S:-110} four threads-pipelined bfloat16 --pipelined
  FOUR_S=${FOUR_S:-110} four threads-switch-0.5ms bfloat16 --switch-interval 0.0005 ;;
gil)
  gpu_tests ${TESTS_S:-90} tests/test_gpu.py tests/test_gpu_tiled.py -k "driver or cuda_graphs"
  for round in 1 2; do
    DASKSAE_DRIVER_GIL=release FOUR_S=${FOUR_S:-105} four release-$round bfloat16
    DASKSAE_DRIVER_GIL=hold FOUR_S=${FOUR_S:-105} four hold-$round bfloat16
  done ;;
table4w)
  timeout ${TABLE_S:-110} python3 bench/kernel_table.py --config coates200 --minibatch 96 --dtype bfloat16 \
    --tiles 2x2 --workers 4 --runs 3 --top 60 --json $OUT/kernel-table-bfloat16-4w.json 2>&1 | filter | head -65 \
    > $OUT/kernel-table-bfloat16-4w.log
  cat $OUT/kernel-table-bfloat16-4w.log ;;
next)
  DASKSAE_FUSED_CUTS=1 gpu_tests ${TESTS_S:-120} tests/test_gpu_tiled.py -k "graphs or equals_cpu or driver"
  for round in 1 2; do
    DASKSAE_FUSED_CUTS=0 FOUR_S=${FOUR_S:-105} four cuts-apart-$round bfloat16
    DASKSAE_FUSED_CUTS=1 FOUR_S=${FOUR_S:-105} four cuts-fused-$round bfloat16
  done
  DASKSAE_FUSED_CUTS=1 timeout ${TABLE_S:-110} python3 bench/kernel_table.py --config coates200 --minibatch 96 \
    --dtype bfloat16 --tiles 2x2 --workers 4 --runs 3 --top 60 --json $OUT/kernel-table-bfloat16-4w-fused.json 2>&1 \
    | filter | head -65 > $OUT/kernel-table-bfloat16-4w-fused.log
  head -8 $OUT/kernel-table-bfloat16-4w-fused.log ;;
final)
  gpu_tests ${TESTS_S:-200} tests/test_gpu.py tests/test_gpu_tiled.py
  DASKSAE_UPDATE_CACHE_HINTS=1 timeout ${HINT_TESTS_S:-70} python3 -m pytest -m gpu -q -p no:cacheprovider -p no:logging \
    --tb=short tests/test_gpu.py tests/test_gpu_tiled.py -k "bfloat16 and train" 2>&1 | tail -15 > $OUT/gpu-tests-cache-hints.log
  tail -1 $OUT/gpu-tests-cache-hints.log
  for round in 1 2; do
    STEP_DTYPE=bfloat16 STEP_S=90 in_process hints-off DASKSAE_UPDATE_CACHE_HINTS=0
    STEP_DTYPE=bfloat16 STEP_S=90 in_process hints-on DASKSAE_UPDATE_CACHE_HINTS=1
  done
  DASKSAE_UPDATE_CACHE_HINTS=1 timeout ${TABLE_S:-80} python3 bench/kernel_table.py --config coates200 --minibatch 96 \
    --dtype bfloat16 --runs 3 --top 40 --json $OUT/kernel-table-bfloat16-hints.json 2>&1 | filter | head -45 \
    > $OUT/kernel-table-bfloat16-hints.log
  head -5 $OUT/kernel-table-bfloat16-hints.log ;;
esac
cd $OUT && tar czf ../results.tgz . && rm -f ./* && mv ../results.tgz .  # one file back (a call brings back 8 at most)
true
