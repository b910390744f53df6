#!/usr/bin/env bash
# On the lent GPU machine (device tool, carry [".whl"]): the CuPy path against NumPy, then reference-step timings.
# Wheels: pytest pluggy iniconfig packaging tqdm pytest-timeout in .whl (see README, "GPU machine").
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit 1
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import cupy, numpy; print('cupy', cupy.__version__, 'numpy', numpy.__version__)"
python3 -m pytest -m gpu -v -s -p no:cacheprovider tests/test_gpu.py 2>&1 | tee $OUT/gpu-tests.log
python3 bench/reference_step.py --backend cupy --config tiny --config small --minibatch 96 --runs 5 --json $OUT/reference-small.json 2>&1 | tee $OUT/reference-step.log
python3 bench/reference_step.py --backend cupy --config coates1.8b --minibatch 96 --runs 3 --json $OUT/reference-1.8b.json 2>&1 | tee -a $OUT/reference-step.log
