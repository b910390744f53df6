#!/usr/bin/env bash
# On the lent GPU machine (device tool, carry [".whl"]), session 18. .whl as in bench/gpu_session14_check.sh's header
# (zarr's wheel needs donfig's and the others listed there: without them, the tests that import zarr fail to load).
# Session 18's first call, PART=fields of bench/gpu_session17_check.sh at db11afa (session18/fields/): the implicit
# tests passed (19); the in-process float32 step took 66.2 and 66.4 ms with DASKSAE_IMPLICIT_FIELDS=0, 64.6 with
# forward and 71.9 and 72.0 with 1 (the fold a phase a launch: 25 small launches a chunk). So forward is now the
# default, and atomic (the fold in one launch, adding atomically) is new.
#   PART=atomic   (needs 499b63d: after it the folds and the values forward and atomic were removed; IMPLICIT_FIELDS
#                 is now 1 or 0) all GPU tests at this commit (forward the default; the atomic fold's tests, and those of
#                 DASKSAE_IMPLICIT_BACKWARD=1: the backward pass's U g_r and weight gradient reading their fields from
#                 the maps, no [X | G] gathers), then the in-process float32 step with (IMPLICIT_FIELDS/IMPLICIT_BACKWARD)
#                 forward/0, atomic/0, forward/1, atomic/1, 0/0, forward/0, atomic/1, each a process of its own (the
#                 switches are read at import). About 560 s.
#                 Ran at 499b63d (session18/atomic/): 140 GPU tests passed; forward/0 64.8 and 65.2 ms, atomic/0 66.6,
#                 forward/1 64.5, atomic/1 66.3 and 66.5, 0/0 66.4. So DASKSAE_IMPLICIT_BACKWARD=1 is now the default.
#   PART=final    with the defaults (IMPLICIT_FIELDS 1, IMPLICIT_BACKWARD 1): the GPU tests of our kernel and the
#                 implicit paths (after the folds' removal changed the kernel's arguments), then the 1-worker float32
#                 row (limit, in-process, 1 worker; 10 steps a task, 20 runs). About 180 s. KERNELS_S=90 adds the
#                 float32 kernel table of the one-tile step (bench/kernel_table.py) before the row.
#                 Ran at 53fe78d with TESTS_S=60 ONEW_S=1 (session18/final/: the row cut for device time): 18 passed.
#   PART=defaults the in-process float32 step with the defaults, in a process of its own. About 50 s. Ran at 53fe78d
#                 (session18/defaults/): 64.4 ms, 52.8% of the limit, 10.5 B/param.
#   PART=next     (prepared for session 19, not run) all GPU tests at this commit (the full suite last ran at 499b63d,
#                 before the folds' removal and with IMPLICIT_BACKWARD off), then the float32 products of each stage
#                 as cuBLAS, our kernel and the implicit kernels run them (bench/gemm_layouts.py --simt --implicit: is
#                 our weight gradient slower than cuBLAS's?), the float32 kernel table, and the 1-worker float32 row.
#                 About 450 s.
#   PART=table    the issue's table with the defaults, in one process (as PART=table of bench/gpu_session17_check.sh).
#                 About 450 s.
# Logs are tarred (logs.tgz): the device returns at most 8 files from $OUT.
source bench/device_setup.sh
card
case "${PART:-atomic}" in
atomic)
  timeout ${TESTS_S:-150} python3 -m pytest -m gpu -q -p no:cacheprovider -p no:logging --tb=short tests/test_gpu.py tests/test_gpu_tiled.py 2>&1 | tail -30 > $OUT/gpu-tests.log
  tail -1 $OUT/gpu-tests.log
  for both in forward/0 atomic/0 forward/1 atomic/1 0/0 forward/0 atomic/1; do
    implicit=${both%/*} backward=${both#*/}
    DASKSAE_IMPLICIT_FIELDS=$implicit DASKSAE_IMPLICIT_BACKWARD=$backward timeout ${STEP_S:-60} python3 bench/gpu_step.py \
      --configs coates200 --minibatch 96 --modes in-process --dtypes float32 --runs 20 \
      --json $OUT/gpu-step-fields-$implicit-$backward-$SECONDS.json 2>&1 | filter | grep -v "  gemm\|cuda graphs" \
      | grep "in-process\|failed\|Error" | sed "s/^/fields-$implicit backward-$backward: /" | tee -a $OUT/gpu-step.log
  done
  cd $OUT && tar czf rows.tgz gpu-step-fields-*.json && rm -f gpu-step-fields-*.json ;;
final)
  timeout ${TESTS_S:-40} python3 -m pytest -m gpu -q -p no:cacheprovider -p no:logging --tb=short tests/test_gpu.py \
    -k "implicit or simt or maps" 2>&1 | tail -30 > $OUT/gpu-tests.log
  tail -1 $OUT/gpu-tests.log
  [ "${KERNELS_S:-0}" = 0 ] || timeout $KERNELS_S python3 bench/kernel_table.py --config coates200 --minibatch 96 \
    --dtype float32 --runs 3 --json $OUT/kernel-table-float32.json 2>&1 | filter | tee $OUT/kernel-table.log
  timeout ${ONEW_S:-120} python3 bench/gpu_step.py --configs coates200 --minibatch 96 --modes limit,dasksae-1w \
    --dtypes float32 --steps-per-task 10 --runs 20 --json $OUT/gpu-step-1w-float32.json 2>&1 | filter \
    | grep -v "  gemm\|cuda graphs" | tee $OUT/gpu-step.log ;;
defaults)
  timeout ${STEP_S:-75} python3 bench/gpu_step.py --configs coates200 --minibatch 96 --modes in-process --dtypes float32 \
    --runs 20 --json $OUT/gpu-step-defaults.json 2>&1 | filter | grep -v "  gemm\|cuda graphs" | tee $OUT/gpu-step.log ;;
next)
  timeout ${TESTS_S:-170} python3 -m pytest -m gpu -q -p no:cacheprovider -p no:logging --tb=short tests/test_gpu.py tests/test_gpu_tiled.py 2>&1 | tail -30 > $OUT/gpu-tests.log
  tail -1 $OUT/gpu-tests.log
  timeout ${LAYOUTS_S:-80} python3 bench/gemm_layouts.py --config coates200 --minibatch 96 --precisions float32 --simt \
    --implicit --runs 10 --json $OUT/gemm-layouts-float32.json 2>&1 | filter | tee $OUT/gemm-layouts.log
  timeout ${KERNELS_S:-90} python3 bench/kernel_table.py --config coates200 --minibatch 96 --dtype float32 --runs 3 \
    --json $OUT/kernel-table-float32.json 2>&1 | filter | tee $OUT/kernel-table.log
  timeout ${ONEW_S:-120} python3 bench/gpu_step.py --configs coates200 --minibatch 96 --modes limit,dasksae-1w \
    --dtypes float32 --steps-per-task 10 --runs 20 --json $OUT/gpu-step-1w-float32.json 2>&1 | filter \
    | grep -v "  gemm\|cuda graphs" | tee $OUT/gpu-step.log ;;
table)
  issue_table ${TABLE_S:-540} ;;
esac
true
