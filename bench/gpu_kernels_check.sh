#!/usr/bin/env bash
# On the lent GPU machine (carry [".whl"]): after a kernel change, the GPU tests, the kernel profile and the
# dasksae rows of the benchmark (with and without eager messages).  See bench/gpu_check.sh for the full run.
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD:$PWD/bench || exit 1
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 200 python3 -m pytest -m gpu -q -p no:cacheprovider -p no:logging tests/test_gpu.py tests/test_gpu_tiled.py 2>&1 | tail -5 | tee $OUT/gpu-tests.log
timeout 60 python3 bench/profile_kernels.py --config coates200 --minibatch 96 --json $OUT/profile-coates200.json 2>&1 | tee $OUT/profile.log
timeout 120 python3 bench/gpu_step.py --configs coates96 --minibatch 512 --modes dasksae-1w --runs 10 --warmup-runs 2 --eager-messages --json $OUT/gpu-step-coates96-eager.json 2>&1 | grep -v "^INFO\|Warning\|warn" | tee $OUT/gpu-step.log
timeout 200 python3 bench/gpu_step.py --configs coates200 --minibatch 96 --modes limit,dasksae-1w --runs 10 --warmup-runs 2 --json $OUT/gpu-step-coates200.json 2>&1 | grep -v "^INFO\|Warning\|warn" | tee -a $OUT/gpu-step.log
