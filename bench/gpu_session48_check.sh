#!/bin/bash
# Session 48's GPU checks (results in bench/results/session48/<part>/, each with its command.txt).
#   PART=first (about 520 s): session 47's two unrun parts in one call, each into a folder of its own under $OUT:
#     ncu/  (PART=ncu of bench/gpu_session47_check.sh) Nsight Compute over stage 2's update whole, with no copy and on
#           the halves, and the two streaming steps: what the kernel on the halves waits on;
#     rows/ (PART=rows of the same) the tiled GPU tests and the bfloat16 rows at the defaults (the limit,
#           1 worker pipelined, 4 worker threads) and the bfloat16 kernel table: the default update path was
#           refactored in session 47 and its tiled GPU tests not rerun
case "${PART:-first}" in
first)
  top=$OUT
  for part in ncu rows; do
    mkdir -p $top/$part
    OUT=$top/$part PART=$part NCU_S=${NCU_S:-120} TESTS_S=${TESTS_S:-120} ONE_S=${ONE_S:-100} FOUR_S=${FOUR_S:-100} \
      TABLE_S=${TABLE_S:-60} bash bench/gpu_session47_check.sh
  done ;;
esac
true
