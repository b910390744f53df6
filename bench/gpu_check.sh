#!/usr/bin/env bash
# On the lent GPU machine (device tool, carry [".whl"]): GPU tests (kernels and the tiled network on
# workers sharing the GPU), the PyTorch peer's loss against dasksae's, then the GPU benchmark.
# Wheels in .whl: ../shared/gpu/fetch-wheels.sh zarr==3.1.5 numcodecs==0.16.3 donfig==0.8.1.post1 typing_extensions crc32c
# plus pytest pluggy iniconfig packaging tqdm pytest-timeout (see README, "GPU machine").
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD:$PWD/bench || exit 1
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import cupy, numpy, torch, dask, distributed; print('cupy', cupy.__version__, 'numpy', numpy.__version__, 'torch', torch.__version__, 'dask', dask.__version__)"
timeout 300 python3 -m pytest -m gpu -q -p no:cacheprovider -p no:logging tests/test_gpu.py tests/test_gpu_tiled.py 2>&1 | tail -15 | tee $OUT/gpu-tests.log
python3 - <<'PY' 2>&1 | tee $OUT/peer-check.log
import numpy
from dasksae import named_config
from torch_peer import check_against_reference
for name in ("tiny", "small"):
    config = named_config(name)
    x = numpy.random.default_rng(0).standard_normal(config.input_shape + (8,)).astype("float32")
    peer, ours = check_against_reference(config, x)
    print(f"{name}: PyTorch peer loss {peer:.6f}, dasksae reference {ours:.6f}, relative difference {abs(peer - ours) / abs(ours):.2e}")
PY
timeout 60 python3 bench/profile_kernels.py --config coates200 --minibatch 96 --json $OUT/profile-coates200.json 2>&1 | tee $OUT/profile.log
timeout 150 python3 bench/gpu_step.py --configs coates96 --minibatch 96,512 --modes dasksae-1w,dasksae-4w "$@" --json $OUT/gpu-step-coates96.json 2>&1 | grep -v "^INFO\|Warning\|warn" | tee $OUT/gpu-step.log
timeout 200 python3 bench/gpu_step.py --configs coates200 --minibatch 96 --precisions float32,bfloat16 "$@" --json $OUT/gpu-step-coates200.json 2>&1 | grep -v "^INFO\|Warning\|warn" | tee -a $OUT/gpu-step.log
