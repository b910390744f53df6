#!/usr/bin/env bash
# On the lent GPU machine (device tool, carry [".whl"]), session 23. .whl as in bench/gpu_session14_check.sh's header.
#   PART=tables   where the bfloat16 step's time goes with today's defaults (the tensor-core update on): the kernel
#                 table of the one-tile in-process step and of 4 worker threads on 2x2 tiles (GPU busy against wall),
#                 and cuBLAS's bfloat16 products per stage (bench/gemm_layouts.py). About 200 s.
source bench/device_setup.sh
card
case "${PART:-tables}" in
tables)
  timeout ${TABLE_S:-150} python3 bench/kernel_table.py --config coates200 --minibatch 96 --dtype bfloat16 --runs 5 \
    --top 40 --json $OUT/kernel-table-bfloat16.json 2>&1 | filter | head -45 > $OUT/kernel-table-bfloat16.log
  head -20 $OUT/kernel-table-bfloat16.log
  timeout ${FOUR_TABLE_S:-150} python3 bench/kernel_table.py --config coates200 --minibatch 96 --dtype bfloat16 \
    --tiles 2x2 --workers 4 --runs 3 --top 40 --json $OUT/kernel-table-bfloat16-4w.json 2>&1 | filter | head -45 \
    > $OUT/kernel-table-bfloat16-4w.log
  head -8 $OUT/kernel-table-bfloat16-4w.log
  timeout ${GEMM_S:-100} python3 bench/gemm_layouts.py --config coates200 --minibatch 96 --precisions bfloat16 \
    --runs 20 --json $OUT/gemm-bfloat16.json 2>&1 | filter | tee $OUT/gemm-bfloat16.log | grep current ;;
esac
true
