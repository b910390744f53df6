#!/usr/bin/env bash
# On the lent GPU machine (device tool, carry [".whl"]), session 17. .whl as in bench/gpu_session14_check.sh's header
# (zarr's wheel needs donfig's and the others listed there: without them, the tests that import zarr fail to load).
# The package's defaults now: DASKSAE_OUTBOX_IN_PLACE=1 (session 16's inplace/ ran it: 121 GPU tests passed) and
# DASKSAE_GC_FREEZE=auto (gc.freeze() once a process's programs are built, where its tiles are on a GPU; session 16's
# next/ measured the bench's --gc-freeze: the 45-56 ms groups of steps went away).
#   PART=confirm  all GPU tests at this commit, then the 4 threads' bfloat16 row with the defaults and with
#                 DASKSAE_GC_FREEZE=0, in turn, three times each. About 400 s.
#   PART=tests    all GPU tests only (about 100 s).
#   PART=onew     the 1-worker rows (and the in-process step) in float32 and bfloat16, one group of 10 steps at a time
#                 as the table measures them, and pipelined as dasksae train runs them (--pipelined), in turn, in
#                 processes of their own, twice each. About 530 s. Ran at cca2307 (session17/onew/): the float32 rows
#                 only, since 130 s a process (ONEW_S) was too short for both dtypes: give it 250 s, or one dtype.
#   PART=table    the issue's table with the defaults, in one process: limit, in-process and 1 worker, 4 worker threads,
#                 PyTorch; float32 and bfloat16 (as PART=table of bench/gpu_session11_check.sh). About 450 s.
#   PART=fields   (ran in session 18 at db11afa: session18/fields/; needs that commit, since the folds and the
#                 switch's value forward were removed after it) DASKSAE_IMPLICIT_FIELDS: float32 filter layers in our kernel
#                 straight from and to the maps: "forward" W x reads its fields from the input map and writes the output
#                 map (dasksae_simt_filter_forward), "1" also adds W^T y's fields straight into the input map, a phase
#                 of non-overlapping blocks a launch (dasksae_simt_filter_fold). Their GPU tests and the simt ones, then
#                 the 1-worker float32 row with 0, 1, forward, 0, 1, each a process of its own. About 500 s.
#   PART=fields-table  the float32 kernel table (bench/kernel_table.py: are the forward gather and the folds gone, and
#                 how fast are the kernels?) and the issue's table, with DASKSAE_IMPLICIT_FIELDS=1. About 450 s.
# Logs are tarred (logs.tgz): the device returns at most 8 files from $OUT.
source bench/device_setup.sh
card
case "${PART:-confirm}" in
confirm)
  timeout ${TESTS_S:-200} python3 -m pytest -m gpu -q -p no:cacheprovider -p no:logging --tb=short tests/test_gpu.py tests/test_gpu_tiled.py 2>&1 | tail -30 > $OUT/gpu-tests.log
  tail -1 $OUT/gpu-tests.log
  for round in a b c; do
    FOUR_S=80 four defaults-$round bfloat16
    DASKSAE_GC_FREEZE=0 FOUR_S=80 four gc-freeze-off-$round bfloat16
  done
  cd $OUT && tar czf rows.tgz gpu-step-4w-*.json && rm -f gpu-step-4w-*.json ;;
tests)
  timeout ${TESTS_S:-200} python3 -m pytest -m gpu -q -p no:cacheprovider -p no:logging --tb=short tests/test_gpu.py tests/test_gpu_tiled.py 2>&1 | tail -30 > $OUT/gpu-tests.log
  tail -1 $OUT/gpu-tests.log ;;
onew)
  for round in a b; do
    for way in plain pipelined; do
      timeout ${ONEW_S:-130} python3 bench/gpu_step.py --configs coates200 --minibatch 96 --modes limit,dasksae-1w \
        --dtypes float32,bfloat16 --steps-per-task 10 --runs 20 $([ $way = pipelined ] && echo --pipelined) \
        --json $OUT/gpu-step-1w-$way-$round.json 2>&1 | filter | grep -v "  gemm\|cuda graphs" | sed "s/^/$way-$round: /" | tee -a $OUT/gpu-step.log
    done
  done
  cd $OUT && tar czf rows.tgz gpu-step-1w-*.json && rm -f gpu-step-1w-*.json ;;
fields)
  timeout ${TESTS_S:-120} python3 -m pytest -m gpu -q -p no:cacheprovider -p no:logging --tb=short tests/test_gpu.py \
    -k "implicit or simt" 2>&1 | tail -30 > $OUT/gpu-tests.log
  tail -1 $OUT/gpu-tests.log
  for implicit in 0 1 forward 0 1; do  # each a process of its own (the switch is read at import)
    DASKSAE_IMPLICIT_FIELDS=$implicit timeout ${ONEW_S:-85} python3 bench/gpu_step.py --configs coates200 --minibatch 96 \
      --modes dasksae-1w --dtypes float32 --steps-per-task 10 --runs 20 --json $OUT/gpu-step-1w-fields-$implicit-$SECONDS.json \
      2>&1 | filter | grep -v "  gemm\|cuda graphs" | sed "s/^/fields-$implicit: /" | tee -a $OUT/gpu-step.log
  done
  cd $OUT && tar czf rows.tgz gpu-step-1w-*.json && rm -f gpu-step-1w-*.json ;;
fields-table)
  export DASKSAE_IMPLICIT_FIELDS=1
  timeout 100 python3 bench/kernel_table.py --config coates200 --minibatch 96 --dtype float32 \
    --runs 3 --json $OUT/kernel-table-fields.json 2>&1 | filter | tee $OUT/kernel-table.log
  issue_table ${TABLE_S:-450} ;;
table)
  issue_table ${TABLE_S:-540} ;;
esac
true
