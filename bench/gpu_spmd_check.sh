#!/usr/bin/env bash
# On the lent GPU machine (carry [".whl"]): GPU tests (SPMD is the default multi-tile execution) and the
# dasksae rows of the benchmark, 1 worker and 4 workers sharing the GPU with 2x2 tiles.
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD:$PWD/bench || exit 1
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 150 python3 -m pytest -m gpu -q -p no:cacheprovider -p no:logging tests/test_gpu_tiled.py 2>&1 | tail -3 | tee $OUT/gpu-tests.log
timeout 120 python3 bench/gpu_step.py --configs coates96 --minibatch 96,512 --modes dasksae-1w,dasksae-4w --runs 10 --runs-4w 10 --warmup-runs 2 --json $OUT/gpu-step-coates96.json 2>&1 | grep -v "^INFO\|Warning\|warn" | tee $OUT/gpu-step.log
timeout 180 python3 bench/gpu_step.py --configs coates200 --minibatch 96 --modes limit,dasksae-1w,dasksae-4w --runs 10 --runs-4w 10 --warmup-runs 2 --json $OUT/gpu-step-coates200.json 2>&1 | grep -v "^INFO\|Warning\|warn" | tee -a $OUT/gpu-step.log
