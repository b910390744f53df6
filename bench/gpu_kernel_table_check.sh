#!/usr/bin/env bash
# On the lent GPU machine (device tool, carry [".whl"]): GPU tests; a coates200 M=96 one-tile step's time by
# CUDA kernel (torch.profiler), float32 and bfloat16; the in-process and 1-worker rows of gpu_step.
source bench/device_setup.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card.txt
timeout ${TESTS_S:-150} python3 -m pytest -m gpu -q -x -p no:cacheprovider -p no:logging tests/test_gpu.py tests/test_gpu_tiled.py 2>&1 | tail -15 | tee $OUT/gpu-tests.log
for dtype in ${DTYPES:-float32 bfloat16}; do
  timeout 90 python3 bench/kernel_table.py --config coates200 --minibatch 96 --dtype $dtype --json $OUT/kernel-table-coates200-$dtype.json 2>&1 | grep -v Warning | tee -a $OUT/kernel-table.log
done
if [ -n "$STEP" ]; then
  timeout 200 python3 bench/gpu_step.py --configs coates200 --minibatch 96 --modes limit,dasksae-1w --dtypes float32,bfloat16 --json $OUT/gpu-step-coates200-m96.json 2>&1 | filter | tee $OUT/gpu-step.log
fi
true
