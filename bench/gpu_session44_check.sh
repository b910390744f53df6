#!/bin/bash
# Session 44's GPU checks (results in bench/results/session44/<part>/, each with its command.txt).  Its first call ran
# session 43's PART=overlap and PART=pairs (bench/gpu_session43_check.sh; both lost: session44/overlap/, pairs/).
# PART=pipelined (the update's step pipelined with the next tile's products) and PART=streams (the tiles' streams
# non-blocking) measured code since taken out: they are in this script at the commits their command.txt names
# (503830d, ad881a0).  PART=half ran at cd5d192 with a rule that took w64x3-half on part-empty grids, since taken out.
#   PART=tables (about 200 s): where the 4 worker threads' step goes beside one tile's: the bfloat16 kernel tables
#     (bench/kernel_table.py, with the GPU's idle gaps) of coates200 (M=96) in 2x2 tiles on 4 worker threads
#     (pipelined, as the row) and in one tile
#   PART=halo (about 330 s): the strip kernels a chunk of a row a block (no 64-bit division a 16-byte unit; 4 loads in
#     flight a thread) and LCN's smoothing at fewer rows a thread in small planes (lcn_rows): their GPU tests, the
#     tiled GPU tests against the CPU and replayed calls, the issue's 4-worker bfloat16 row, the 4 threads' kernel
#     table
#   PART=half (about 330 s): W x in blocks of 64 rows (mma_forward.py's w64x3-half, by name): the forward's GPU tests
#     (each variant against NumPy) and the tiled ones, the bfloat16 product floors (its row beside w64x3-swizzled's
#     on one tile's grids), the issue's 4-worker row with w64x3-half and at the default, then the 4 threads' kernel
#     table
source bench/device_setup.sh
card
table() { TABLE_S=${TABLE_S:-120} table_with_gaps "$@"; }
case "${PART:-tables}" in
tables)
  table 4w --tiles 2x2 --workers 4 --pipelined
  table 1w ;;
halo)
  gpu_tests ${TESTS_S:-150} tests/test_gpu.py tests/test_gpu_tiled.py \
    -k "strip_copies or halo_windows or pooling_lcn or cuda_graphs_equal or gpu_training_equals_cpu"
  tail -3 $OUT/gpu-tests.log
  FOUR_S=${FOUR_S:-130} four bfloat16 bfloat16
  TABLE_S=${TABLE_S:-100} table 4w --tiles 2x2 --workers 4 --pipelined ;;
half)
  gpu_tests ${TESTS_S:-100} tests/test_gpu.py tests/test_gpu_tiled.py -k "tensor_core_forward_on_the_gpu or cuda_graphs_equal"
  tail -3 $OUT/gpu-tests.log
  timeout ${PRODUCT_S:-50} python3 bench/product_floor.py --config coates200 --minibatch 96 --runs 10 \
    --json $OUT/product-floor-bfloat16.json 2>&1 | filter | tee $OUT/product-floor.log | grep "all"
  DASKSAE_WGMMA_FORWARD=w64x3-half FOUR_S=${FOUR_S:-80} four half bfloat16
  FOUR_S=${FOUR_S:-80} four whole bfloat16
  TABLE_S=${TABLE_S:-70} table 4w --tiles 2x2 --workers 4 --pipelined | head -8 ;;
esac
cd $OUT && tar czf ../results.tgz . && rm -f ./* && mv ../results.tgz .  # one file back
true
