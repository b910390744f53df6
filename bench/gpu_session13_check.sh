#!/usr/bin/env bash
# On the lent GPU machine (device tool, carry [".whl"]), session 13. The first call was PART=next of
# bench/gpu_session12_check.sh (bench/results/session13/next/): the GPU tests ran past their 100 s, and the
# pipelined groups of steps made the 4 worker threads slower (45.1 -> 50.5 ms in bfloat16).
#   PART=quiet  all GPU tests with time to finish, then the 4 worker threads in bfloat16 with Dask's own GIL takers
#               turned off one at a time: the workers' statistical profiler (a walk of every thread's stack each
#               10 ms a worker, under the GIL), then that and a longer GIL switch interval (20 ms).
#               Ran at 9fce9c4: 117 GPU tests passed; 56.0, 73.9 and 47.8 ms, the in-process step 30.9-34.1 ms.
#   PART=switch the GIL switch interval alone, interleaved to see through the call's noise: 20 ms, the default
#               (5 ms), 20 ms, the default, 50 ms (session 12: 0.5 ms was worse, 53.2 against 41.8 ms).
#               Ran at 43e2719: 50.9, 51.3, 58.3, 54.8, 51.4 ms (in-process 31.2-34.1): no effect beyond the noise.
#   (table4w of bench/gpu_session12_check.sh ran next: GPU busy 35.8 ms of the 4 threads' 54.0 ms profiled step,
#   1.20x the one-tile step; the excess is halo copies and adds. bench/results/session13/table4w/)
#   PART=halo   (prepared for session 14, not run) the halo change that followed (a tile's own pieces as views,
#               sum_into from a copy of the covering contribution; bench/halo_traffic.py): all GPU tests, the
#               4 threads' kernel table with it and, where ab_old/dasksae exists, without it (before the call:
#               mkdir ab_old && git archive 92fbc0c dasksae | tar -x -C ab_old; untracked, so it travels; the GPU's
#               busy time is the figure that the host's noise does not move: table4w had 35.8 ms, 3.5 ms of
#               copies, 1.4 ms of adds; bench/kernel_groups.py puts the JSONs side by side), then the 4 threads'
#               bfloat16 step twice. About 450 s.
source bench/device_setup.sh
card
FOUR_S=${FOUR_S:-110}  # four (bench/device_setup.sh): 110 s a row in this session's calls
case "${PART:-quiet}" in
quiet)
  timeout ${TESTS_S:-220} python3 -m pytest -m gpu -q -p no:cacheprovider -p no:logging --tb=short tests/test_gpu.py tests/test_gpu_tiled.py 2>&1 | tail -20 | tee $OUT/gpu-tests.log
  four defaults bfloat16
  DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=False four no-profiler bfloat16
  DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=False four no-profiler-switch-20ms bfloat16 --switch-interval 0.02 ;;
halo)
  timeout ${TESTS_S:-200} python3 -m pytest -m gpu -q -p no:cacheprovider -p no:logging --tb=short tests/test_gpu.py tests/test_gpu_tiled.py 2>&1 | tail -20 | tee $OUT/gpu-tests.log
  table4w() {  # table4w LABEL: the 4 worker threads' bfloat16 step by CUDA kernel
    timeout 100 python3 bench/kernel_table.py --config coates200 --minibatch 96 --dtype bfloat16 --tiles 2x2 --workers 4 \
      --runs 2 --json $OUT/kernel-table-coates200-bfloat16-4w-$1.json 2>&1 | filter | sed "s/^/$1: /" | tee -a $OUT/kernel-table.log; }
  table4w halo
  [ -d ab_old/dasksae ] && PYTHONPATH=$PWD/ab_old:$PYTHONPATH table4w before
  FOUR_S=100 four halo-a bfloat16
  FOUR_S=100 four halo-b bfloat16 ;;
switch)
  FOUR_S=100 four switch-20ms-a bfloat16 --switch-interval 0.02
  FOUR_S=100 four default-a bfloat16
  FOUR_S=100 four switch-20ms-b bfloat16 --switch-interval 0.02
  FOUR_S=100 four default-b bfloat16
  FOUR_S=100 four switch-50ms bfloat16 --switch-interval 0.05 ;;
esac
true
