#!/bin/bash
# Session 50's GPU checks (results in bench/results/session50/<part>/, each with its command.txt).
#   (session 51 removed w32-regs-2 and w32-async-*: PART=transpose and quick no longer run as written; PART=next's
#   successor is bench/gpu_session51_check.sh)
#   (session 50's first call ran session 49's PART=third: bench/results/session50/third/)
#   PART=next (about 450 s; for session 51): float32 W x, U g_r and W^T y in w32-hoisted (the fetch's addresses kept
#     from k-tile to k-tile: W x 398 instructions a k-tile against w32-split-2's 520, W^T y 479 against 690;
#     bench/kernel_registers.py --sass): its GPU tests, the in-process float32 step at the defaults (first, compiling
#     the kernels), with w32-hoisted and at the defaults again, the float32 floors (W x in w32-split-2, w32-hoisted,
#     mma.sync, three terms and one; W^T y in w32-split-2 and w32-hoisted), then the issue's float32 rows with both
#     PyTorch peers at the faster (session 51: the float32 kernel table at the faster, and the ratio only where
#     w32-hoisted was the faster)
#   PART=transpose (about 430 s): float32 W^T y on wgmma with its products asynchronous again (ptxas had serialized
#     every wgmma of the kernel, C7518, for the wait in a divergent path; tests/test_wgmma_assembly.py), and W x, U g_r
#     and W^T y in w32-regs-2 (two register sets: each k-tile's loads issued two k-tiles ahead): their GPU tests and
#     the float32 training tests, the float32 product floors of those rows, the in-process float32 step in three
#     settings (both products in w32-regs-2; the defaults; W^T y on wgmma at every stage, =all; SETTINGS=float32-regs-tall
#     for w32-regs-2's W x with =all instead), then (unless RATIO=0: about 250 s without) the issue's float32 rows
#     with both PyTorch peers at the fastest
#   PART=quick (about 160 s, what session 50's last 446 s of device time allowed): the in-process float32 step in
#     w32-regs-2 and at the defaults, PART=transpose's GPU tests of the float32 W^T y and w32-regs-2, then the float32
#     product floors of both products in w32-split-2 and w32-regs-2 (and mma.sync's W^T y)
#   PART=profile (about 420 s): where the float32 step's time goes now, and what its products wait on: the float32
#     and bfloat16 kernel tables of the one-tile step at the defaults, then Nsight Compute (raw counters, CSV) over
#     one launch each of stage 2's float32 products (W x in mma.sync's split and w32-split-2, three terms and one;
#     W^T y in w32-split-2; the weights' read; session 51 dropped w32-async-4's rows with the variant) and its
#     float32 updates on wgmma (three terms and one),
#     then the per-instruction stall samples of tf32 W x in w32-split-2 (ncu's source page, SASS)
source bench/device_setup.sh
card
NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
SECTIONS="--section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats --section SchedulerStats
  --section Occupancy --section LaunchStats --section ComputeWorkloadAnalysis"
counters() {  # counters LABEL SECONDS COMMAND...: ncu's raw counters of COMMAND's dasksae_ kernels into $OUT/ncu-LABEL.csv
  timeout $2 $NCU --clock-control none -k regex:dasksae_ $SECTIONS --csv --page raw "${@:3}" > $OUT/ncu-$1.csv \
    2> $OUT/ncu-$1.err
  echo "ncu $1 rc $?: $(grep -c '^"[0-9]' $OUT/ncu-$1.csv) kernel rows"; }
case "${PART:-next}" in
next)
  gpu_tests ${TESTS_S:-60} tests/test_gpu.py -k "hoisted"
  tail -3 $OUT/gpu-tests.log
  declare -A settings=([float32-defaults]="DASKSAE_FLOAT32_WGMMA_FORWARD=auto"
    [float32-hoisted]="DASKSAE_FLOAT32_WGMMA_FORWARD=w32-hoisted DASKSAE_FLOAT32_WGMMA_TRANSPOSE=w32-hoisted")
  # (on a fresh machine the first step compiles most kernels, which can outlast 45 s: session 50's quick/)
  STEP_S=${WARM_S:-100} in_process float32-first-defaults ${settings[float32-defaults]}
  for label in float32-hoisted float32-defaults; do STEP_S=${STEP_S:-45} in_process $label ${settings[$label]}; done
  faster=$(faster_of float32-defaults float32-hoisted)
  echo "faster: $faster (${settings[$faster]})"
  timeout ${PRODUCT_S:-40} python3 bench/product_floor.py --precision float32 --config coates200 --minibatch 96 \
    --runs 5 --rows forward-3xtf32,forward-3xtf32-w32-split-2,forward-3xtf32-w32-hoisted,forward-tf32,forward-tf32-w32-split-2,forward-tf32-w32-hoisted,transpose-3xtf32-w32-split-2,transpose-3xtf32-w32-hoisted,transpose-tf32-w32-hoisted \
    --json $OUT/product-floor-float32.json 2>&1 | filter | tee $OUT/product-floor.log
  kernel_table_float32 ${TABLE_S:-75} ${settings[$faster]}
  # (session 51: the ratio only where w32-hoisted was the faster; at the defaults session 50's third/ stands)
  [ "${RATIO:-1}" = 1 ] && [ $faster = float32-hoisted ] && (export ${settings[$faster]}; ratio_float32 ${RATIO_S:-180} --compile) ;;
transpose)
  gpu_tests ${TESTS_S:-60} tests/test_gpu.py -k "regs or (transpose and wgmma) or split_tf32_transpose_on_the_gpu"
  tail -3 $OUT/gpu-tests.log
  timeout ${PRODUCT_S:-60} python3 bench/product_floor.py --precision float32 --config coates200 --minibatch 96 \
    --runs 5 --rows forward-3xtf32,forward-3xtf32-w32-split-2,forward-3xtf32-w32-regs-2,forward-tf32-w32-split-2,forward-tf32-w32-regs-2,transpose,transpose-3xtf32,transpose-3xtf32-w32-split-2,transpose-3xtf32-w32-regs-2,transpose-tf32-w32-split-2,transpose-tf32-w32-regs-2 \
    --json $OUT/product-floor-float32.json 2>&1 | filter | tee $OUT/product-floor.log
  declare -A settings=([float32-defaults]="DASKSAE_FLOAT32_WGMMA_TRANSPOSE=auto"
    [float32-tall]="DASKSAE_FLOAT32_WGMMA_TRANSPOSE=all"
    [float32-regs]="DASKSAE_FLOAT32_WGMMA_FORWARD=w32-regs-2 DASKSAE_FLOAT32_WGMMA_TRANSPOSE=w32-regs-2"
    [float32-regs-tall]="DASKSAE_FLOAT32_WGMMA_FORWARD=w32-regs-2 DASKSAE_FLOAT32_WGMMA_TRANSPOSE=all")
  for label in float32-regs float32-defaults ${SETTINGS:-float32-tall}; do
    STEP_S=${STEP_S:-40} in_process $label ${settings[$label]}
  done
  faster=$(faster_of float32-defaults float32-tall)
  faster=$(faster_of $faster float32-regs)
  faster=$(faster_of $faster float32-regs-tall)
  echo "faster: $faster (${settings[$faster]})"
  [ "${RATIO:-1}" = 1 ] && (export ${settings[$faster]}; ratio_float32 ${RATIO_S:-180} --compile) ;;
quick)
  STEP_S=${STEP_S:-45} in_process float32-regs DASKSAE_FLOAT32_WGMMA_FORWARD=w32-regs-2 \
    DASKSAE_FLOAT32_WGMMA_TRANSPOSE=w32-regs-2
  STEP_S=${STEP_S:-45} in_process float32-defaults
  gpu_tests ${TESTS_S:-30} tests/test_gpu.py -k "split_tf32_transpose_on_the_gpu or regs"
  tail -3 $OUT/gpu-tests.log
  timeout ${PRODUCT_S:-30} python3 bench/product_floor.py --precision float32 --config coates200 --minibatch 96 \
    --runs 5 --rows forward-3xtf32-w32-split-2,forward-3xtf32-w32-regs-2,transpose-3xtf32,transpose-3xtf32-w32-split-2,transpose-3xtf32-w32-regs-2 \
    --json $OUT/product-floor-float32.json 2>&1 | filter | tee $OUT/product-floor.log ;;
profile)
  echo "ncu: $NCU"; $NCU --version | tail -1
  kernel_table_float32 ${TABLE_S:-75}
  kernel_table_bfloat16 ${TABLE_S:-75} 12
  counters products ${PRODUCTS_S:-120} python3 bench/product_floor.py --precision float32 --config coates200 \
    --minibatch 96 --stages 2 --runs 1 --warmup-runs 0 --rows forward-3xtf32,forward-3xtf32-w32-split-2,forward-tf32,forward-tf32-w32-split-2,transpose-3xtf32-w32-split-2,read
  counters updates ${UPDATES_S:-70} python3 bench/update_floor.py --precision float32 --config coates200 \
    --minibatch 96 --stages 2 --runs 1 --warmup-runs 0 --rows "fused (3xtf32 rows-wide-wgmma),fused (tf32 rows-wide-wgmma)"
  timeout ${SOURCE_S:-90} $NCU --clock-control none -k regex:dasksae_ --section WarpStateStats --section SourceCounters \
    --page source --print-source sass --csv python3 bench/product_floor.py --precision float32 --config coates200 \
    --minibatch 96 --stages 2 --runs 1 --warmup-runs 0 --rows forward-tf32-w32-split-2 > $OUT/ncu-source.csv \
    2> $OUT/ncu-source.err
  echo "ncu source rc $?: $(wc -l < $OUT/ncu-source.csv) lines" ;;
esac
cd $OUT && tar czf ../results.tgz . && rm -f ./* && mv ../results.tgz .  # one file back
true
