#!/usr/bin/env bash
# On the lent GPU machine (device tool, carry [".whl"]), session 9.
#   PART=first  cuBLAS through ctypes with handles of our own (CuPy's binding refuses calls during stream capture) and
#               scale states staged with a on the device: the CUDA-graph tests, the rows with CUDA graphs and halo
#               events (in-process, 1 worker, 4 worker threads; float32 and bfloat16), then all GPU tests;
#   PART=second graphs by default (auto) where worker threads share the GPU, their memory freed after capture: all GPU
#               tests, the rows with the defaults, then 4 worker threads with halo events too;
#   PART=next   (for session 10) the graph tests, then 4 worker threads with graph runs cut at every message and at
#               receipts only (DASKSAE_GRAPH_CUTS), with the host-wait figures;
#   PART=profile (for session 10) kernel tables of 4 worker threads and of one tile in bfloat16 (is the 4-thread
#               step device-bound?), and each filter product in its layout and transposed (bench/gemm_layouts.py);
#   PART=final  halo events on by default as well: all GPU tests, then the table (limit, 1 worker, 4 worker threads,
#               PyTorch) in one gpu_step.py process.
source bench/device_setup.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card.txt
case "${PART:-first}" in
first)
  timeout 80 python3 -m pytest -m gpu -q -p no:cacheprovider -p no:logging --tb=short tests/test_gpu_tiled.py -k cuda_graphs 2>&1 | tail -40 | tee $OUT/gpu-tests-graphs.log
  DASKSAE_CUDA_GRAPHS=1 DASKSAE_HALO_EVENTS=1 timeout 260 python3 bench/gpu_step.py --configs coates200 --minibatch 96 \
    --modes dasksae-in-process,dasksae-1w,dasksae-4w-threads --dtypes float32,bfloat16 --steps-per-task 10 --steps-per-task-4w 10 \
    --runs 20 --runs-4w 5 --json $OUT/gpu-step-coates200-m96-graphs.json 2>&1 | filter | grep -v "  gemm" | sed 's/^/graphs: /' | tee -a $OUT/gpu-step.log
  timeout ${TESTS_S:-200} python3 -m pytest -m gpu -q -p no:cacheprovider -p no:logging --tb=short -x tests/test_gpu.py tests/test_gpu_tiled.py 2>&1 | tail -30 | tee $OUT/gpu-tests.log ;;
second)
  # CUDA graphs by default where worker threads share the GPU (DASKSAE_CUDA_GRAPHS=auto), their memory freed: all GPU
  # tests, the rows with the defaults, then 4 worker threads with halo events as well
  timeout ${TESTS_S:-150} python3 -m pytest -m gpu -q -p no:cacheprovider -p no:logging --tb=short tests/test_gpu.py tests/test_gpu_tiled.py 2>&1 | tail -30 | tee $OUT/gpu-tests.log
  timeout 230 python3 bench/gpu_step.py --configs coates200 --minibatch 96 \
    --modes dasksae-in-process,dasksae-1w,dasksae-4w-threads --dtypes float32,bfloat16 --steps-per-task 10 --steps-per-task-4w 10 \
    --runs 20 --runs-4w 5 --json $OUT/gpu-step-coates200-m96-defaults.json 2>&1 | filter | grep -v "  gemm" | sed 's/^/defaults: /' | tee -a $OUT/gpu-step.log
  DASKSAE_HALO_EVENTS=1 timeout 120 python3 bench/gpu_step.py --configs coates200 --minibatch 96 --modes dasksae-4w-threads \
    --dtypes float32,bfloat16 --steps-per-task-4w 10 --runs-4w 5 --runs 5 --json $OUT/gpu-step-coates200-m96-events.json 2>&1 | filter | grep -v "  gemm" | sed 's/^/halo events: /' | tee -a $OUT/gpu-step.log ;;
final)
  # the table with this session's defaults (CUDA graphs where worker threads share the GPU, halo events on): all GPU
  # tests, then the limit, 1 worker (with the in-process kernel time), 4 worker threads and PyTorch, in one process
  timeout ${TESTS_S:-120} python3 -m pytest -m gpu -q -p no:cacheprovider -p no:logging --tb=short tests/test_gpu.py tests/test_gpu_tiled.py 2>&1 | tail -30 | tee $OUT/gpu-tests.log
  timeout ${TABLE_S:-420} python3 bench/gpu_step.py --configs coates200 --minibatch 96 \
    --modes limit,dasksae-1w,dasksae-4w-threads,torch --dtypes float32,bfloat16 --precisions float32,bfloat16 \
    --steps-per-task 10 --steps-per-task-4w 10 --runs 20 --runs-4w 5 \
    --json $OUT/gpu-step-coates200-m96.json 2>&1 | filter | grep -v "  gemm" | tee $OUT/gpu-step.log ;;
gil)
  # A/B in one call: 4 worker threads with Python's GIL switch interval (5 ms) and with 0.5 ms.  Ran at d0b15ef, whose
  # spmd.py read DASKSAE_GIL_SWITCH_MS; the switch went after it showed no gain (bench/results/session9/gil/)
  for ms in 0 0.5; do
    DASKSAE_GIL_SWITCH_MS=$ms timeout 105 python3 bench/gpu_step.py --configs coates200 --minibatch 96 --modes dasksae-4w-threads \
      --dtypes float32,bfloat16 --steps-per-task-4w 10 --runs-4w 3 --runs 3 --warmup-runs 1 --json $OUT/gpu-step-coates200-m96-gil-$ms.json 2>&1 \
      | filter | grep -v "  gemm\|cuda graphs" | sed "s/^/gil switch $ms ms: /" | tee -a $OUT/gpu-step.log
  done ;;
next)
  # prepared for the next session (not run in session 9): the CUDA-graph tests (now with graph runs cut at receipts
  # only), then 4 worker threads with DASKSAE_GRAPH_CUTS=messages (the default) and =receipts, in one call; the rows
  # print how long a tile's thread waited for messages and for the device (the rest is host work)
  timeout 90 python3 -m pytest -m gpu -q -p no:cacheprovider -p no:logging --tb=short tests/test_gpu_tiled.py -k cuda_graphs 2>&1 | tail -30 | tee $OUT/gpu-tests-graphs.log
  for cuts in messages receipts; do
    DASKSAE_GRAPH_CUTS=$cuts timeout 150 python3 bench/gpu_step.py --configs coates200 --minibatch 96 --modes dasksae-4w-threads \
      --dtypes bfloat16,float32 --steps-per-task-4w 10 --runs-4w 5 --runs 3 --warmup-runs 1 --json $OUT/gpu-step-coates200-m96-cuts-$cuts.json 2>&1 \
      | filter | grep -v "  gemm" | sed "s/^/graph cuts at $cuts: /" | tee -a $OUT/gpu-step.log
  done ;;
profile)
  # prepared for the next session (not run in session 9): where the 4-thread step's time goes. The kernel table of
  # 4 worker threads (GPU busy share: device-bound or not) and of one tile, in bfloat16; each filter product in its
  # layout and with its result transposed
  timeout 150 python3 bench/kernel_table.py --config coates200 --minibatch 96 --dtype bfloat16 --tiles 2x2 --workers 4 \
    --runs 2 --json $OUT/kernel-table-coates200-bfloat16-4w.json 2>&1 | filter | tee $OUT/kernel-table.log
  timeout 90 python3 bench/kernel_table.py --config coates200 --minibatch 96 --dtype bfloat16 --runs 3 \
    --json $OUT/kernel-table-coates200-bfloat16-1w.json 2>&1 | filter | tee -a $OUT/kernel-table.log
  timeout 80 python3 bench/kernel_table.py --config coates200 --minibatch 96 --dtype float32 --runs 3 \
    --json $OUT/kernel-table-coates200-float32-1w.json 2>&1 | filter | tee -a $OUT/kernel-table.log
  timeout 90 python3 bench/gemm_layouts.py --config coates200 --minibatch 96 --precisions float32,bfloat16 \
    --json $OUT/gemm-layouts-coates200-m96.json 2>&1 | tee $OUT/gemm-layouts.log ;;
esac
true
