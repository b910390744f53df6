#!/bin/bash
# Session 44's GPU checks (results in bench/results/session44/<part>/, each with its command.txt).  Its first call ran
# session 43's PART=overlap and PART=pairs (bench/gpu_session43_check.sh; both lost: session44/overlap/, pairs/).
# PART=pipelined ran at 503830d and PART=streams at its own commit (see their command.txt): the pipelined update
# variants and DASKSAE_TILE_STREAM_BLOCKING, which they measure, were taken out after (both lost or changed nothing);
# PART=half's rule (w64x3-half taken on grids of part-empty last waves) likewise: w64x3-half is kept by name only
#   PART=pipelined (about 250 s): the update's step pipelined with the next tile's products (mma_update.py's
#     rows-pipelined*-wgmma): the update's GPU tests (each variant against NumPy), the bfloat16 update floors with
#     the pipelined variants beside the training's rows-wide-wgmma, then the in-process bfloat16 step with the
#     training's update and with the fastest pipelined variant (DASKSAE_WGMMA_UPDATE=<name>), twice, each in a
#     process of its own
#   PART=tables (about 200 s): where the 4 worker threads' step goes beside one tile's: the bfloat16 kernel tables
#     (bench/kernel_table.py, with the GPU's idle gaps) of coates200 (M=96) in 2x2 tiles on 4 worker threads
#     (pipelined, as the row) and in one tile
#   PART=halo (about 330 s): the strip kernels a chunk of a row a block (no 64-bit division a 16-byte unit; 4 loads in
#     flight a thread) and LCN's smoothing at fewer rows a thread in small planes (lcn_rows): their GPU tests, the
#     tiled GPU tests against the CPU and replayed calls, the issue's 4-worker bfloat16 row, the 4 threads' kernel
#     table
#   PART=streams (about 330 s): the tiles' streams not blocking with respect to the legacy default stream
#     (DASKSAE_TILE_STREAM_BLOCKING=0), and the strip adds with their destinations' loads in flight: the tiled GPU
#     tests with it, then the 4-worker bfloat16 row with blocking and with non-blocking streams, twice
#   PART=half (about 330 s): W x in blocks of 64 rows (mma_forward.py's w64x3-half) where 128-row blocks would leave
#     their last wave under 80% full (a 2x2 tile's grids): the forward's GPU tests (each variant against NumPy) and
#     the tiled ones (against the CPU, replayed calls: small grids take it), the bfloat16 product floors (its row
#     beside w64x3-swizzled's on one tile's grids), the 4-worker row with the rule and with 128-row blocks
#     only (DASKSAE_WGMMA_FORWARD=w64x3-swizzled), then the 4 threads' kernel table
source bench/device_setup.sh
card
table() { TABLE_S=${TABLE_S:-120} table_with_gaps "$@"; }
case "${PART:-pipelined}" in
pipelined)
  gpu_tests ${TESTS_S:-100} tests/test_gpu.py -k "tensor_core_update_on_the_gpu"
  tail -3 $OUT/gpu-tests.log
  timeout ${FLOOR_S:-120} python3 bench/update_floor.py --config coates200 --minibatch 96 --runs 10 \
    --variants ${VARIANTS:-rows-pipelined-wgmma,rows-pipelined-light-wgmma,rows-pipelined-heavy-wgmma,rows-pipelined-short-wgmma} \
    --json $OUT/update-floor-bfloat16.json 2>&1 | filter | tee $OUT/update-floor.log
  BEST=$(awk '$1 == "all" && $3 ~ /^\(rows-pipelined/ { gsub(/[()]/, "", $3); if (!b || $5 < m) { m = $5; b = $3 } }
    END { print b }' $OUT/update-floor.log)
  echo "fastest pipelined: ${BEST:=rows-pipelined-wgmma}" | tee -a $OUT/gpu-step.log
  for round in 1 2; do
    STEP_DTYPE=bfloat16 in_process wide DASKSAE_WGMMA_UPDATE=1
    STEP_DTYPE=bfloat16 in_process pipelined DASKSAE_WGMMA_UPDATE=$BEST
  done ;;
tables)
  table 4w --tiles 2x2 --workers 4 --pipelined
  table 1w ;;
halo)
  gpu_tests ${TESTS_S:-150} tests/test_gpu.py tests/test_gpu_tiled.py \
    -k "strip_copies or halo_windows or pooling_lcn or cuda_graphs_equal or gpu_training_equals_cpu"
  tail -3 $OUT/gpu-tests.log
  FOUR_S=${FOUR_S:-130} four bfloat16 bfloat16
  TABLE_S=${TABLE_S:-100} table 4w --tiles 2x2 --workers 4 --pipelined ;;
streams)
  export DASKSAE_TILE_STREAM_BLOCKING=0
  gpu_tests ${TESTS_S:-120} tests/test_gpu.py tests/test_gpu_tiled.py -k "strip_copies or cuda_graphs_equal or gpu_training_equals_cpu"
  tail -3 $OUT/gpu-tests.log
  unset DASKSAE_TILE_STREAM_BLOCKING
  for round in 1 2; do
    FOUR_S=${FOUR_S:-100} four blocking-$round bfloat16
    DASKSAE_TILE_STREAM_BLOCKING=0 FOUR_S=${FOUR_S:-100} four non-blocking-$round bfloat16
  done ;;
half)
  gpu_tests ${TESTS_S:-100} tests/test_gpu.py tests/test_gpu_tiled.py -k "tensor_core_forward_on_the_gpu or cuda_graphs_equal"
  tail -3 $OUT/gpu-tests.log
  timeout ${PRODUCT_S:-50} python3 bench/product_floor.py --config coates200 --minibatch 96 --runs 10 \
    --json $OUT/product-floor-bfloat16.json 2>&1 | filter | tee $OUT/product-floor.log | grep "all"
  FOUR_S=${FOUR_S:-80} four half bfloat16
  DASKSAE_WGMMA_FORWARD=w64x3-swizzled FOUR_S=${FOUR_S:-80} four whole bfloat16
  TABLE_S=${TABLE_S:-70} table 4w --tiles 2x2 --workers 4 --pipelined | head -8 ;;
esac
cd $OUT && tar czf ../results.tgz . && rm -f ./* && mv ../results.tgz .  # one file back
true
