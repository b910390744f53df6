#!/usr/bin/env bash
# On the lent GPU machine (device tool, carry [".whl"]): a coates200 step's time by array primitive.
source bench/device_setup.sh
for dtype in ${DTYPES:-float32 bfloat16}; do
  timeout 90 python3 bench/profile_primitives.py --config coates200 --minibatch 96 --dtype $dtype --json $OUT/profile-primitives-$dtype.json 2>&1 | tee -a $OUT/profile-primitives.log
done
true
