#!/usr/bin/env bash
# On the lent GPU machine (device tool, carry [".whl"]), session 10.
#   PART=host   graph runs cut at receipts by default: the CUDA-graph GPU tests, then 4 worker threads (bfloat16,
#               float32) with the worker threads' Python stacks sampled (bench/thread_sampler.py): where a tile's
#               host time goes.
source bench/device_setup.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card.txt
git log -1 --format=%h > $OUT/commit.txt 2>/dev/null
case "${PART:-host}" in
host)
  timeout 100 python3 -m pytest -m gpu -q -p no:cacheprovider -p no:logging --tb=short tests/test_gpu_tiled.py -k cuda_graphs 2>&1 | tail -30 | tee $OUT/gpu-tests-graphs.log
  timeout 200 python3 bench/gpu_step.py --configs coates200 --minibatch 96 --modes dasksae-4w-threads --sample-host \
    --dtypes bfloat16,float32 --steps-per-task-4w 10 --runs-4w 5 --runs 3 --warmup-runs 1 --json $OUT/gpu-step-coates200-m96-host.json 2>&1 \
    | filter | grep -v "  gemm" | tee $OUT/gpu-step.log ;;
esac
true
