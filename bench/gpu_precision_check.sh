#!/usr/bin/env bash
# On the lent GPU machine (device tool, carry [".whl"]): GPU tests, the kernel profile in each precision and
# chunk size, then the benchmark of issue 5 (float32 / tf32 / bfloat16; 1 and 4 workers; PyTorch peers;
# several steps per task at M=512).  Wheels in .whl: see bench/gpu_check.sh.
source bench/device_setup.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card.txt
python3 -c "import cupy, numpy, torch, dask, distributed; print('cupy', cupy.__version__, 'numpy', numpy.__version__, 'torch', torch.__version__, 'dask', dask.__version__)" | tee -a $OUT/card.txt
timeout ${TESTS_S:-150} python3 -m pytest -m gpu -q -x -p no:cacheprovider -p no:logging tests/test_gpu.py tests/test_gpu_tiled.py 2>&1 | tail -25 | tee $OUT/gpu-tests.log
timeout ${PROFILE_S:-90} python3 bench/profile_kernels.py --config coates200 --minibatch 96 --chunk-mb ${CHUNKS:-32,256,0} --json $OUT/profile-coates200.json 2>&1 | tee $OUT/profile.log
timeout ${STEP200_S:-240} python3 bench/gpu_step.py --configs coates200 --minibatch 96 --modes ${MODES200:-limit,dasksae-1w,dasksae-4w,torch} --runs-4w 5 "$@" --json $OUT/gpu-step-coates200.json 2>&1 | filter | tee $OUT/gpu-step.log
timeout ${STEP96_S:-120} python3 bench/gpu_step.py --configs coates96 --minibatch 512 --modes ${MODES96:-limit,dasksae-1w,torch} --dtypes ${DTYPES96:-float32,bfloat16} --steps-per-task 1,10 --runs 10 "$@" --json $OUT/gpu-step-coates96.json 2>&1 | filter | tee -a $OUT/gpu-step.log
