#!/bin/bash
# Session 46's GPU checks (results in bench/results/session46/<part>/, each with its command.txt).
#   PART=trace (about 150 s): the 4 worker threads' bfloat16 kernel table (2x2 tiles, pipelined), with every kernel's
#     CUDA stream and times written to $OUT/trace-4w.json (bench/kernel_table.py --trace), to see which tiles' kernels
#     run side by side and where a part-empty last wave is left unfilled
source bench/device_setup.sh
card
case "${PART:-trace}" in
trace)
  TABLE_S=${TABLE_S:-120} table_with_gaps 4w --tiles 2x2 --workers 4 --pipelined --trace $OUT/trace-4w.json | head -3
  grep "at once" $OUT/kernel-table-bfloat16-4w.log ;;
esac
cd $OUT && tar czf ../results.tgz . && rm -f ./* && mv ../results.tgz .  # one file back
true
