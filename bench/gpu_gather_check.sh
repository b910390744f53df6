#!/usr/bin/env bash
# On the lent H100 (device tool, carry [".whl"]): after the one-kernel fields gather: GPU tests, the step
# profile by primitive (float32), and the coates200 1-worker rows (float32, bfloat16).
source bench/device_setup.sh
timeout 70 python3 -m pytest -m gpu -q -x -p no:cacheprovider -p no:logging tests/test_gpu.py tests/test_gpu_tiled.py 2>&1 | tail -15 | tee $OUT/gpu-tests.log
timeout 45 python3 bench/profile_primitives.py --config coates200 --minibatch 96 --dtype float32 --json $OUT/profile-primitives-float32.json 2>&1 | tee $OUT/profile-primitives.log
timeout 150 python3 bench/gpu_step.py --configs coates200 --minibatch 96 --modes limit,dasksae-1w --dtypes float32,bfloat16 --json $OUT/gpu-step-coates200-m96.json 2>&1 | filter | tee $OUT/gpu-step.log
true
