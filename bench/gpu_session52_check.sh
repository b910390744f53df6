#!/bin/bash
# Session 52's GPU checks (results in bench/results/session52/<part>/, each with its command.txt).
#   (session 53 ran PART=next and PART=ratio SETTING=a-registers-hoisted: bench/results/session53/next/ and ratio/;
#   then removed w32-hoisted, w32-a-registers and w32-a-registers-sectors, which lost: PART=next, quick and least no
#   longer run as written; PART=ratio runs with SETTING=a-registers-hoisted or split-2; bench/gpu_session53_check.sh
#   is its successor)
#   PART=next (about 520 s): float32 W x, U g_r and W^T y in w32-a-registers (session 51: A, the weights, split into
#     wgmma's register fragments instead of staged in shared memory), in w32-a-registers-hoisted (session 52: that
#     and w32-hoisted's kept addresses) and in w32-a-registers-sectors (session 52: that with B's loads by whole
#     32-byte sectors): the in-process float32 step at the defaults (first, compiling the kernels), with each and at
#     the defaults again, the float32 product floors of those rows and w32-hoisted's (session 50), their GPU tests,
#     and the float32 kernel table of the one-tile step at the fastest setting
#   PART=ratio (about 200 s; SETTING=the winning variant's name): the float32 rows with both PyTorch peers at
#     DASKSAE_FLOAT32_WGMMA_FORWARD and _TRANSPOSE = SETTING, in one process
#   PART=quick (about 300 s, for what little device time is left): the in-process float32 step at the defaults (first,
#     100 s for the kernels' first compiles), in w32-a-registers-sectors and in w32-a-registers (both products), the
#     product floors of w32-split-2 and the three register variants, then their GPU tests
#   PART=least (about 300 s): the quick part's work with the floors and the GPU tests first
source bench/device_setup.sh
card
variants=(a-registers a-registers-hoisted a-registers-sectors)
least_rows=forward-3xtf32-w32-split-2,transpose-3xtf32-w32-split-2
for variant in a-registers a-registers-hoisted a-registers-sectors; do
  least_rows=$least_rows,forward-3xtf32-w32-$variant,transpose-3xtf32-w32-$variant
done
setting() {  # setting VARIANT (with or without its w32- prefix): both float32 products' switches at it
  echo "DASKSAE_FLOAT32_WGMMA_FORWARD=w32-${1#w32-} DASKSAE_FLOAT32_WGMMA_TRANSPOSE=w32-${1#w32-}"; }
case "${PART:-next}" in
next)
  # (on a fresh machine the first step compiles most kernels, which can outlast 45 s: session 50's quick/)
  STEP_S=${WARM_S:-100} in_process float32-first-defaults DASKSAE_FLOAT32_WGMMA_FORWARD=auto
  for variant in ${variants[@]}; do
    STEP_S=${STEP_S:-45} in_process float32-$variant $(setting $variant)
  done
  STEP_S=${STEP_S:-45} in_process float32-defaults DASKSAE_FLOAT32_WGMMA_FORWARD=auto
  faster=float32-defaults
  for variant in ${variants[@]}; do faster=$(faster_of $faster float32-$variant); done
  echo "faster: $faster"
  rows=forward-3xtf32-w32-split-2,transpose-3xtf32-w32-split-2
  for variant in ${variants[@]} hoisted; do rows=$rows,forward-3xtf32-w32-$variant,transpose-3xtf32-w32-$variant; done
  timeout ${PRODUCT_S:-50} python3 bench/product_floor.py --precision float32 --config coates200 --minibatch 96 \
    --runs 5 --rows $rows --json $OUT/product-floor-float32.json 2>&1 | filter | tee $OUT/product-floor.log
  gpu_tests ${TESTS_S:-90} tests/test_gpu.py -k "hoisted or a-registers"
  tail -3 $OUT/gpu-tests.log
  [ $faster = float32-defaults ] && kernel_table_float32 ${TABLE_S:-75} DASKSAE_FLOAT32_WGMMA_FORWARD=auto \
    || kernel_table_float32 ${TABLE_S:-75} $(setting ${faster#float32-}) ;;
ratio)
  (export $(setting ${SETTING:?name the variant}); ratio_float32 ${RATIO_S:-200} --compile) ;;
quick)
  STEP_S=${WARM_S:-100} in_process float32-defaults DASKSAE_FLOAT32_WGMMA_FORWARD=auto
  STEP_S=${STEP_S:-45} in_process float32-a-registers-sectors $(setting a-registers-sectors)
  STEP_S=${STEP_S:-45} in_process float32-a-registers $(setting a-registers)
  timeout ${PRODUCT_S:-45} python3 bench/product_floor.py --precision float32 --config coates200 --minibatch 96 \
    --runs 5 --rows $least_rows \
    --json $OUT/product-floor-float32.json 2>&1 | filter | tee $OUT/product-floor.log
  gpu_tests ${TESTS_S:-60} tests/test_gpu.py -k "a-registers"
  tail -3 $OUT/gpu-tests.log ;;
least)  # the quick part's work, the floors and tests first (a run cut short keeps what it wrote)
  timeout ${PRODUCT_S:-60} python3 bench/product_floor.py --precision float32 --config coates200 --minibatch 96 \
    --runs 5 --rows $least_rows \
    --json $OUT/product-floor-float32.json 2>&1 | filter | tee $OUT/product-floor.log
  gpu_tests ${TESTS_S:-60} tests/test_gpu.py -k "a-registers"
  tail -3 $OUT/gpu-tests.log
  STEP_S=${WARM_S:-90} in_process float32-defaults DASKSAE_FLOAT32_WGMMA_FORWARD=auto
  STEP_S=${STEP_S:-45} in_process float32-a-registers-sectors $(setting a-registers-sectors)
  STEP_S=${STEP_S:-45} in_process float32-a-registers $(setting a-registers) ;;
esac
cd $OUT && tar czf ../results.tgz . && rm -f ./* && mv ../results.tgz .  # one file back
true
