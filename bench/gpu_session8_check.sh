#!/usr/bin/env bash
# On the lent GPU machine (device tool, carry [".whl"]), session 8.  Session 7's script, PART=next, was this
# session's first call (bench/results/session8/next/).
#   PART=ab     A/Bs against that call's rows: DASKSAE_GEMM=tuned (1 worker), DASKSAE_GEMM=search (in-process,
#               float32: which of cuBLASLt's tile shapes suit M = 96) and DASKSAE_HALO_EVENTS=1 (4 worker threads);
#   PART=graphs the GPU tests, then the 1-worker and 4-worker-thread rows with cuBLAS on the thread's stream, then
#               with CUDA graphs and halo events (DASKSAE_CUDA_GRAPHS=1 DASKSAE_HALO_EVENTS=1).
source bench/device_setup.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card.txt
case "${PART:-ab}" in
ab)
  DASKSAE_HALO_EVENTS=1 timeout 150 python3 bench/gpu_step.py --configs coates200 --minibatch 96 --modes dasksae-4w-threads \
    --dtypes float32,bfloat16 --steps-per-task-4w 10 --runs-4w 5 --runs 5 --json $OUT/gpu-step-coates200-m96-halo-events.json 2>&1 | filter | sed 's/^/halo events: /' | tee -a $OUT/gpu-step.log
  DASKSAE_GEMM=tuned timeout 140 python3 bench/gpu_step.py --configs coates200 --minibatch 96 --modes dasksae-1w \
    --dtypes float32,bfloat16 --steps-per-task 10 --runs 20 --json $OUT/gpu-step-coates200-m96-tuned.json 2>&1 | filter | sed 's/^/tuned: /' | tee -a $OUT/gpu-step.log
  DASKSAE_GEMM=search timeout 230 python3 bench/gpu_step.py --configs coates200 --minibatch 96 --modes dasksae-in-process \
    --dtypes float32 --runs 20 --json $OUT/gpu-step-coates200-m96-search.json 2>&1 | filter | sed 's/^/search: /' | tee -a $OUT/gpu-step.log ;;
graphs)
  # after the call above: cuBLAS on the thread's stream (it ran on the legacy stream), and CUDA graphs (opt-in)
  timeout ${TESTS_S:-150} python3 -m pytest -m gpu -q -p no:cacheprovider -p no:logging --tb=short tests/test_gpu.py tests/test_gpu_tiled.py 2>&1 | tail -30 | tee $OUT/gpu-tests.log
  timeout 130 python3 bench/gpu_step.py --configs coates200 --minibatch 96 --modes dasksae-1w,dasksae-4w-threads \
    --dtypes float32,bfloat16 --steps-per-task 10 --steps-per-task-4w 10 --runs 20 --runs-4w 5 \
    --json $OUT/gpu-step-coates200-m96-stream.json 2>&1 | filter | sed 's/^/cublas stream: /' | tee -a $OUT/gpu-step.log
  DASKSAE_CUDA_GRAPHS=1 DASKSAE_HALO_EVENTS=1 timeout 200 python3 bench/gpu_step.py --configs coates200 --minibatch 96 \
    --modes dasksae-in-process,dasksae-1w,dasksae-4w-threads --dtypes float32,bfloat16 --steps-per-task 10 --steps-per-task-4w 10 \
    --runs 20 --runs-4w 5 --json $OUT/gpu-step-coates200-m96-graphs.json 2>&1 | filter | sed 's/^/graphs: /' | tee -a $OUT/gpu-step.log ;;
graphs2)
  # the same after the first graphs call's bug (a weak reference CuPy's pools refuse): the graph tests, the rows with
  # CUDA graphs and halo events, then 4 worker threads with halo events only
  timeout 70 python3 -m pytest -m gpu -q -p no:cacheprovider -p no:logging --tb=short tests/test_gpu_tiled.py -k cuda_graphs 2>&1 | tail -30 | tee $OUT/gpu-tests.log
  DASKSAE_CUDA_GRAPHS=1 DASKSAE_HALO_EVENTS=1 timeout 280 python3 bench/gpu_step.py --configs coates200 --minibatch 96 \
    --modes dasksae-in-process,dasksae-1w,dasksae-4w-threads --dtypes float32,bfloat16 --steps-per-task 10 --steps-per-task-4w 10 \
    --runs 20 --runs-4w 5 --json $OUT/gpu-step-coates200-m96-graphs.json 2>&1 | filter | grep -v "  gemm" | sed 's/^/graphs: /' | tee -a $OUT/gpu-step.log
  DASKSAE_HALO_EVENTS=1 timeout 100 python3 bench/gpu_step.py --configs coates200 --minibatch 96 --modes dasksae-4w-threads \
    --dtypes float32,bfloat16 --steps-per-task-4w 10 --runs-4w 5 --runs 5 --json $OUT/gpu-step-coates200-m96-events.json 2>&1 | filter | grep -v "  gemm" | sed 's/^/halo events: /' | tee -a $OUT/gpu-step.log ;;
esac
true
