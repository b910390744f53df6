#!/usr/bin/env bash
# On the lent GPU machine (device tool, carry [".whl"]), session 10.
#   PART=host   graph runs cut at receipts by default: the CUDA-graph GPU tests, then 4 worker threads (bfloat16,
#               float32) with the worker threads' Python stacks sampled (bench/thread_sampler.py): where a tile's
#               host time goes. Before them: each chunk's weight update beside the next chunk's GEMMs
#               (DASKSAE_OVERLAP_UPDATE) A/B'd on one worker, and the float32 kernel table with it (GPU busy time).
#               (The overlap rows failed: CuPy has no deviceGetStreamPriorityRange; the side stream now takes
#               CUDA's default priority.)
#   PART=final  memcpy copies of sent and staged values; the overlap A/B; 4 worker threads with the defaults.
#   PART=probe  (prepared, not run) bench/graph_event_probe.py: halo waits as event nodes inside CUDA graphs.
#   PART=simt   (prepared, not run) our float32 GEMM with a 128 x 96 tile against cuBLAS: test, products, step.
# The overlap (streams.SideWork, DASKSAE_OVERLAP_UPDATE) gained nothing and was removed after 78410c1; the rows of
# PART=host and PART=final that set it need that commit.
source bench/device_setup.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card.txt
case "${PART:-host}" in
host)
  timeout 120 python3 -m pytest -m gpu -q -p no:cacheprovider -p no:logging --tb=short tests/test_gpu_tiled.py -k "cuda_graphs or beside" 2>&1 | tail -30 | tee $OUT/gpu-tests-graphs.log
  for overlap in 0 1; do
    DASKSAE_OVERLAP_UPDATE=$overlap timeout 110 python3 bench/gpu_step.py --configs coates200 --minibatch 96 --modes dasksae-1w \
      --dtypes float32,bfloat16 --steps-per-task 10 --runs 20 --json $OUT/gpu-step-coates200-m96-overlap-$overlap.json 2>&1 \
      | filter | grep -v "  gemm\|cuda graphs" | sed "s/^/overlap $overlap: /" | tee -a $OUT/gpu-step.log
  done
  DASKSAE_OVERLAP_UPDATE=1 timeout 70 python3 bench/kernel_table.py --config coates200 --minibatch 96 --dtype float32 --runs 3 \
    --json $OUT/kernel-table-coates200-float32-1w-overlap.json 2>&1 | filter | head -12 | tee -a $OUT/kernel-table.log
  timeout 200 python3 bench/gpu_step.py --configs coates200 --minibatch 96 --modes dasksae-4w-threads --sample-host \
    --dtypes bfloat16,float32 --steps-per-task-4w 10 --runs-4w 5 --runs 3 --warmup-runs 1 --json $OUT/gpu-step-coates200-m96-host.json 2>&1 \
    | filter | grep -v "  gemm" | tee -a $OUT/gpu-step.log ;;
final)
  # sent and staged values copied with one cudaMemcpyAsync each instead of CuPy's copy kernel (host time), and the
  # update-overlap A/B again (the first try called a runtime function CuPy lacks): the graph and overlap tests,
  # the in-process step with DASKSAE_OVERLAP_UPDATE 0 and 1, 4 worker threads with the defaults, and the float32
  # kernel table with the overlap (GPU busy time against the sum of kernel times)
  timeout 110 python3 -m pytest -m gpu -q -p no:cacheprovider -p no:logging --tb=short tests/test_gpu_tiled.py -k "cuda_graphs or beside" 2>&1 | tail -30 | tee $OUT/gpu-tests-graphs.log
  for overlap in 0 1; do
    DASKSAE_OVERLAP_UPDATE=$overlap timeout 75 python3 bench/gpu_step.py --configs coates200 --minibatch 96 --modes dasksae-inprocess \
      --dtypes float32,bfloat16 --runs 30 --json $OUT/gpu-step-coates200-m96-overlap-$overlap.json 2>&1 \
      | filter | grep -v "  gemm\|cuda graphs" | sed "s/^/overlap $overlap: /" | tee -a $OUT/gpu-step.log
  done
  timeout 120 python3 bench/gpu_step.py --configs coates200 --minibatch 96 --modes dasksae-4w-threads \
    --dtypes bfloat16,float32 --steps-per-task-4w 10 --runs-4w 5 --runs 3 --warmup-runs 1 --json $OUT/gpu-step-coates200-m96-4w.json 2>&1 \
    | filter | grep -v "  gemm" | sed "s/^/memcpy copies: /" | tee -a $OUT/gpu-step.log
  DASKSAE_OVERLAP_UPDATE=1 timeout 60 python3 bench/kernel_table.py --config coates200 --minibatch 96 --dtype float32 --runs 3 \
    --json $OUT/kernel-table-coates200-float32-1w-overlap.json 2>&1 | filter | head -12 | tee -a $OUT/kernel-table.log
  timeout ${TESTS_S:-100} python3 -m pytest -m gpu -q -p no:cacheprovider -p no:logging --tb=short tests/test_gpu.py tests/test_gpu_tiled.py \
    -k "not cuda_graphs and not beside" 2>&1 | tail -20 | tee $OUT/gpu-tests.log ;;
probe)
  # prepared for the next session (not run in session 10): can a tile's graph wait for its neighbour's inside the
  # graph (external event record and wait nodes), and with what ordering semantics (bench/graph_event_probe.py)
  timeout 60 python3 bench/graph_event_probe.py --json $OUT/graph-event-probe.json 2>&1 | tee $OUT/graph-event-probe.log ;;
simt)
  # prepared for the next session (not run in session 10): our float32 GEMM with a 128 x 96 tile
  # (dasksae/kernels/simt_gemm.py, DASKSAE_GEMM=simt): its GPU test against cuBLAS, each product of coates200
  # with cuBLAS and with it (time, TFLOP/s, largest difference), then the in-process float32 step with each
  timeout 90 python3 -m pytest -m gpu -q -p no:cacheprovider -p no:logging --tb=short tests/test_gpu.py -k "simt or cublas" 2>&1 | tail -30 | tee $OUT/gpu-tests-simt.log
  timeout 120 python3 bench/gemm_layouts.py --config coates200 --minibatch 96 --precisions float32 --simt \
    --json $OUT/gemm-layouts-simt-coates200-m96.json 2>&1 | tee $OUT/gemm-layouts-simt.log
  for gemm in cublas simt; do
    DASKSAE_GEMM=$gemm timeout 75 python3 bench/gpu_step.py --configs coates200 --minibatch 96 --modes dasksae-inprocess \
      --dtypes float32 --runs 30 --json $OUT/gpu-step-coates200-m96-gemm-$gemm.json 2>&1 \
      | filter | grep -v "  gemm\|cuda graphs" | sed "s/^/gemm $gemm: /" | tee -a $OUT/gpu-step.log
  done ;;
esac
true
