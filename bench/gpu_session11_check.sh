#!/usr/bin/env bash
# On the lent GPU machine (device tool, carry [".whl"]), session 11.
#   PART=simt   our float32 GEMM (dasksae/kernels/simt_gemm.py, now the default DASKSAE_GEMM=simt) with two stages of
#               shared memory against one and against cuBLAS: its GPU tests, each product of coates200 (M=96) and
#               coates96 (M=96, 512), then coates200 float32 steps with cuBLAS and with it: in-process, 1 worker, and
#               4 worker threads (bfloat16 too, whose products it does not take).
#   PART=ab     the simt GEMM and the host running ahead of the device (DASKSAE_RUN_AHEAD, new: the stages' losses
#               and RICA's a stay on the device, read once a task): all GPU tests, the GEMM on coates200's and
#               coates96's products, then 1 worker (after the in-process step of the same call) in float32 with
#               cuBLAS and no run-ahead, simt and no run-ahead, and the defaults (bfloat16 too); then 4 worker
#               threads with and without run-ahead.
#   PART=final  the last call of session 11 (about 6 minutes of device time were left), most needed first: the
#               GPU tests of worker threads and CUDA graphs (2x2 failed in PART=ab: tile (0, 0) sent RICA's new a out of
#               its graphs' memory; now copied apart), the simt test, then with the defaults, in one process,
#               bfloat16 then float32: in-process, 1 worker, 4 worker threads.
#   PART=table  (at the end) the issue's table with the defaults: limit, 1 worker, 4 workers, PyTorch.
source bench/device_setup.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card.txt
step() {  # step SECONDS ARGS...: bench/gpu_step.py on coates200, M=96, at most SECONDS
  timeout $1 python3 bench/gpu_step.py --configs coates200 --minibatch 96 "${@:2}" 2>&1 | filter | grep -v "  gemm\|cuda graphs"; }
case "${PART:-simt}" in
simt)
  timeout 90 python3 -m pytest -m gpu -q -p no:cacheprovider -p no:logging --tb=short tests/test_gpu.py -k "simt or cublas" 2>&1 | tail -30 | tee $OUT/gpu-tests-simt.log
  for shape in "coates200 96" "coates96 96" "coates96 512"; do
    set -- $shape
    timeout 100 python3 bench/gemm_layouts.py --config $1 --minibatch $2 --precisions float32 --simt \
      --json $OUT/gemm-layouts-simt-$1-m$2.json 2>&1 | grep -v transposed | tee -a $OUT/gemm-layouts-simt.log
  done
  for gemm in cublas simt; do  # the 1-worker rows follow an in-process row of the same call
    DASKSAE_GEMM=$gemm step 120 --modes dasksae-1w --dtypes float32 --steps-per-task 10 --runs 20 \
      --json $OUT/gpu-step-coates200-m96-1w-$gemm.json | sed "s/^/gemm $gemm: /" | tee -a $OUT/gpu-step.log
  done
  step 120 --modes dasksae-4w-threads --dtypes float32,bfloat16 --steps-per-task-4w 10 --runs-4w 5 --runs 3 --warmup-runs 1 \
    --json $OUT/gpu-step-coates200-m96-4w.json | sed "s/^/gemm simt: /" | tee -a $OUT/gpu-step.log ;;
ab)
  timeout ${TESTS_S:-150} python3 -m pytest -m gpu -q -p no:cacheprovider -p no:logging --tb=short tests/test_gpu.py tests/test_gpu_tiled.py 2>&1 | tail -30 | tee $OUT/gpu-tests.log
  for shape in "coates200 96" "coates96 96"; do
    set -- $shape
    timeout 60 python3 bench/gemm_layouts.py --config $1 --minibatch $2 --precisions float32 --simt \
      --json $OUT/gemm-layouts-simt-$1-m$2.json 2>&1 | grep -v transposed | tee -a $OUT/gemm-layouts-simt.log
  done
  DASKSAE_GEMM=cublas DASKSAE_RUN_AHEAD=0 step 100 --modes dasksae-1w --dtypes float32 --steps-per-task 10 --runs 20 \
    --json $OUT/gpu-step-1w-cublas-wait.json | sed "s/^/cublas, wait each step: /" | tee -a $OUT/gpu-step.log
  DASKSAE_RUN_AHEAD=0 step 100 --modes dasksae-1w --dtypes float32 --steps-per-task 10 --runs 20 \
    --json $OUT/gpu-step-1w-simt-wait.json | sed "s/^/simt, wait each step: /" | tee -a $OUT/gpu-step.log
  step 140 --modes dasksae-1w --dtypes float32,bfloat16 --steps-per-task 10 --runs 20 \
    --json $OUT/gpu-step-1w-defaults.json | sed "s/^/defaults (simt, run ahead 2): /" | tee -a $OUT/gpu-step.log ;;
ab4)
  for ahead in 0 2; do
    DASKSAE_RUN_AHEAD=$ahead step 120 --modes dasksae-4w-threads --dtypes bfloat16,float32 --steps-per-task-4w 10 --runs-4w 5 --runs 3 \
      --warmup-runs 1 --json $OUT/gpu-step-4w-ahead-$ahead.json | sed "s/^/run ahead $ahead: /" | tee -a $OUT/gpu-step.log
  done ;;
final)
  timeout 90 python3 -m pytest -m gpu -q -p no:cacheprovider -p no:logging --tb=line tests/test_gpu_tiled.py tests/test_gpu.py \
    -k "equals_cpu or cuda_graphs or simt" 2>&1 | tail -15 | tee $OUT/gpu-tests.log
  # one process for all rows (each new process pays the ceilings, imports and kernel loads again)
  step ${STEP_S:-280} --modes dasksae-1w,dasksae-4w-threads --dtypes bfloat16,float32 --steps-per-task 10 --runs 20 \
    --steps-per-task-4w 10 --runs-4w 5 --json $OUT/gpu-step.json | tee -a $OUT/gpu-step.log ;;
table)
  # the table with this session's defaults (the simt GEMM for float32's W x and W^T y): all GPU tests, then the
  # limit, 1 worker (with the in-process step of the same call), 4 worker threads and PyTorch, in one process
  timeout ${TESTS_S:-120} python3 -m pytest -m gpu -q -p no:cacheprovider -p no:logging --tb=short tests/test_gpu.py tests/test_gpu_tiled.py 2>&1 | tail -30 | tee $OUT/gpu-tests.log
  issue_table ${TABLE_S:-420} ;;
esac
true
