#!/usr/bin/env bash
# On the lent GPU machine (device tool, carry [".whl"]): where a coates200 step's time goes (kernels of
# stage 1; tile functions of the whole step) in float32 and bfloat16, then the benchmark rows named by MODES.
source bench/device_setup.sh
for dtype in ${PROFILE_DTYPES:-float32 bfloat16}; do
  timeout 90 python3 bench/profile_step.py --config coates200 --minibatch 96 --dtype $dtype --json $OUT/profile-step-coates200-$dtype.json 2>&1 | tee -a $OUT/profile-step.log
done
timeout ${PROFILE_S:-80} python3 bench/profile_kernels.py --config coates200 --minibatch 96 --chunk-mb ${CHUNKS:-32,256,0} --json $OUT/profile-coates200.json 2>&1 | tee $OUT/profile.log
[ -n "$MODES" ] && timeout ${STEP_S:-200} python3 bench/gpu_step.py --configs ${CONFIGS:-coates200} --minibatch ${MINIBATCH:-96} --modes $MODES --dtypes ${DTYPES:-bfloat16} --runs-4w 5 "$@" --json $OUT/gpu-step.json 2>&1 | filter | tee $OUT/gpu-step.log
true
