#!/usr/bin/env bash
# On the lent GPU machine (device tool, carry [".whl"]), session 7:
#   PART=tune   the GEMM tests, then in-process coates200 M=96 steps with the plain cuBLAS call (DASKSAE_GEMM=cublas)
#               and with cuBLASLt algorithms tuned per shape (then the default), printing each shape's choice; then the
#               tuned float32 step by CUDA kernel;
#   PART=slices the GPU tests, then in-process coates200 M=96 steps with the weight gradient and update in one piece
#               a chunk (DASKSAE_UPDATE_SLICE_BYTES=0) and in L2-sized slices (24 and 8 MiB); then the float32 step by
#               CUDA kernel;
#   PART=final  the kernel GPU tests, then one gpu_step call for the coates200 M=96 table: limit, in-process,
#               1 worker (10 steps a task), 4 worker threads 2x2 (10 steps a task), PyTorch; then the float32 and
#               bfloat16 steps by CUDA kernel;
#   PART=next   written for the next session's first call (not run in session 7): all GPU tests (the 4-worker-thread
#               ones exercise the SPMD replay and the halo events), then the coates200 M=96 table with the defaults
#               (plain GEMM call, replay on): limit, 1 worker, 4 worker threads, PyTorch;
#   PART=ab     the A/Bs for the same call's rows: DASKSAE_GEMM=tuned (1 worker), DASKSAE_GEMM=search (in-process,
#               float32: which of cuBLASLt's tile shapes suit M = 96), DASKSAE_HALO_EVENTS=1 and DASKSAE_SPMD_REPLAY=0
#               (4 worker threads).
source bench/device_setup.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card.txt
case "${PART:-tune}" in
tune)
  timeout 120 python3 -m pytest -m gpu -q -p no:cacheprovider -p no:logging tests/test_gpu.py -k "cublas or tuned" 2>&1 | tail -8 | tee $OUT/gpu-tests.log
  DASKSAE_GEMM=cublas timeout 150 python3 bench/gpu_step.py --configs coates200 --minibatch 96 --modes limit,dasksae-in-process \
    --dtypes float32,bfloat16 --runs 20 --json $OUT/gpu-step-coates200-m96-cublas.json 2>&1 | filter | sed 's/^/cublas: /' | tee $OUT/gpu-step.log
  timeout 200 python3 bench/gpu_step.py --configs coates200 --minibatch 96 --modes limit,dasksae-in-process \
    --dtypes float32,bfloat16 --runs 20 --json $OUT/gpu-step-coates200-m96-tuned.json 2>&1 | filter | tee -a $OUT/gpu-step.log
  timeout 90 python3 bench/kernel_table.py --config coates200 --minibatch 96 --dtype float32 --json $OUT/kernel-table-coates200-float32.json 2>&1 | grep -v "Warning\|warn_once" | head -30 | tee $OUT/kernel-table.log ;;
slices)
  timeout ${TESTS_S:-200} python3 -m pytest -m gpu -q -p no:cacheprovider -p no:logging --tb=line tests/test_gpu.py tests/test_gpu_tiled.py 2>&1 | tail -25 | tee $OUT/gpu-tests.log
  for bytes in 0 25165824 8388608; do
    DASKSAE_UPDATE_SLICE_BYTES=$bytes timeout 150 python3 bench/gpu_step.py --configs coates200 --minibatch 96 --modes dasksae-in-process \
      --dtypes float32,bfloat16 --runs 20 --json $OUT/gpu-step-coates200-m96-slices-$bytes.json 2>&1 | filter | grep -v "  gemm" | sed "s/^/slices $bytes: /" | tee -a $OUT/gpu-step.log
  done
  timeout 90 python3 bench/kernel_table.py --config coates200 --minibatch 96 --dtype float32 --json $OUT/kernel-table-coates200-float32.json 2>&1 | grep -v "Warning\|warn_once" | head -30 | tee $OUT/kernel-table.log ;;
final)
  timeout ${TESTS_S:-100} python3 -m pytest -m gpu -q -p no:cacheprovider -p no:logging --tb=line tests/test_gpu.py 2>&1 | tail -8 | tee $OUT/gpu-tests.log
  timeout ${TABLE_S:-420} python3 bench/gpu_step.py --configs coates200 --minibatch 96 \
    --modes limit,dasksae-1w,dasksae-4w-threads,torch --dtypes float32,bfloat16 --precisions float32,bfloat16 \
    --steps-per-task 10 --steps-per-task-4w 10 --runs 20 --runs-4w 5 \
    --json $OUT/gpu-step-coates200-m96.json 2>&1 | filter | tee $OUT/gpu-step.log
  for dtype in float32 bfloat16; do
    timeout 60 python3 bench/kernel_table.py --config coates200 --minibatch 96 --dtype $dtype --json $OUT/kernel-table-coates200-$dtype.json 2>&1 | grep -v "Warning\|warn_once" | head -30 | tee -a $OUT/kernel-table.log
  done ;;
next)
  timeout ${TESTS_S:-200} python3 -m pytest -m gpu -q -p no:cacheprovider -p no:logging --tb=short tests/test_gpu.py tests/test_gpu_tiled.py 2>&1 | tail -30 | tee $OUT/gpu-tests.log
  timeout ${TABLE_S:-400} python3 bench/gpu_step.py --configs coates200 --minibatch 96 \
    --modes limit,dasksae-1w,dasksae-4w-threads,torch --dtypes float32,bfloat16 --precisions float32,bfloat16 \
    --steps-per-task 10 --steps-per-task-4w 10 --runs 20 --runs-4w 5 \
    --json $OUT/gpu-step-coates200-m96.json 2>&1 | filter | tee $OUT/gpu-step.log ;;
ab)
  DASKSAE_GEMM=tuned timeout 150 python3 bench/gpu_step.py --configs coates200 --minibatch 96 --modes dasksae-1w \
    --dtypes float32,bfloat16 --steps-per-task 10 --runs 20 --json $OUT/gpu-step-coates200-m96-tuned.json 2>&1 | filter | sed 's/^/tuned: /' | tee -a $OUT/gpu-step.log
  DASKSAE_GEMM=search timeout 300 python3 bench/gpu_step.py --configs coates200 --minibatch 96 --modes dasksae-in-process \
    --dtypes float32 --runs 20 --json $OUT/gpu-step-coates200-m96-search.json 2>&1 | filter | sed 's/^/search: /' | tee -a $OUT/gpu-step.log
  DASKSAE_HALO_EVENTS=1 timeout 150 python3 bench/gpu_step.py --configs coates200 --minibatch 96 --modes dasksae-4w-threads \
    --dtypes float32,bfloat16 --steps-per-task-4w 10 --runs-4w 5 --runs 5 --json $OUT/gpu-step-coates200-m96-halo-events.json 2>&1 | filter | sed 's/^/halo events: /' | tee -a $OUT/gpu-step.log
  DASKSAE_SPMD_REPLAY=0 timeout 150 python3 bench/gpu_step.py --configs coates200 --minibatch 96 --modes dasksae-4w-threads \
    --dtypes float32,bfloat16 --steps-per-task-4w 10 --runs-4w 5 --runs 5 --json $OUT/gpu-step-coates200-m96-no-replay.json 2>&1 | filter | sed 's/^/no replay: /' | tee -a $OUT/gpu-step.log ;;
esac
true
