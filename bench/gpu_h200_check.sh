#!/usr/bin/env bash
# On the lent H200 (device tool, kind nvidia-h200, carry [".whl"]): a measured update of the 11.0B coates11.2b
# network on one card (float32, then bfloat16 products over float32 master weights), memory per parameter.
source bench/device_setup.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card.txt
for dtype in float32 bfloat16; do
  timeout 200 python3 bench/largest_update.py --inputs 188 --minibatch 96 --dtype $dtype --json $OUT/largest-update-$dtype.json 2>&1 | tee -a $OUT/largest-update.log
done
true
