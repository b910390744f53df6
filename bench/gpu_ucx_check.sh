#!/usr/bin/env bash
# On the lent GPU machine (device tool, carry [".whl-ucx"]: ../shared/gpu/fetch-wheels.sh --ucx, ~55 MB, without
# the zarr/pytest wheels of .whl so that the carry fits 64 MiB): 4 worker processes sharing the GPU over UCX
# against TCP and against 1 worker, coates200 M=96.
WHEELS=.whl-ucx source bench/device_setup.sh
python3 -c "import distributed_ucxx, ucxx; print('ucxx', ucxx.__version__)" 2>&1 | tail -2 | tee $OUT/ucx.log
for protocol in ucx tcp; do
  timeout ${STEP_S:-150} python3 bench/gpu_step.py --configs ${CONFIGS:-coates200} --minibatch 96 --modes dasksae-4w --dtypes ${DTYPES:-float32} --runs-4w 5 --protocol $protocol --json $OUT/gpu-step-4w-$protocol.json 2>&1 | filter | tee -a $OUT/gpu-step-ucx.log
done
true
# the largest coates11.2b-family network one card updates (H100: the 11.0B net does not fit; try smaller inputs)
timeout ${LARGEST_S:-200} python3 bench/largest_update.py --inputs ${INPUTS:-176,168,160,152} --minibatch 96 --dtype float32 --json $OUT/largest-update.json 2>&1 | tee $OUT/largest-update.log
true
