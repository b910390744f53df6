# Sourced by the bench/gpu_*.sh scripts on the lent GPU machine: installs the carried wheels (WHEELS, default
# .whl) into /tmp/site, puts the repo and bench/ on the path, and defines `filter` (drops worker log noise), `card`
# (the card's name into $OUT/card.txt), `four` (the 4-worker-thread row of bench/gpu_step.py), `issue_table` (the
# issue's table in one process: limit, 1 worker with the in-process step, 4 worker threads, PyTorch), `gpu_tests`,
# `floors_float32` (the float32 product and update floors), `in_process` (one in-process step under given
# switches), `one_worker` (the pipelined 1-worker row under given switches), `one_worker_float32`, `ratio_float32`
# (with PyTorch), `faster_of` (which of two in_process labels was faster), `kernel_table_bfloat16`,
# `table_with_gaps` (a bfloat16 table with the GPU's idle gaps, one tile or worker threads) and
# `kernel_table_float32`.
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site ${WHEELS:-.whl}/*.whl \
  && export PYTHONPATH=/tmp/site:$PWD:$PWD/bench || exit 1
export PYTHONUNBUFFERED=1
filter() { grep -v "^INFO\|Warning\|warn\|^  warnings\|^$\|detach\|first_loss"; }
card() { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/card.txt; }
four() {  # four LABEL DTYPES ARGS...: 4 worker threads (and the in-process step) on coates200, M=96; FOUR_S seconds
  timeout ${FOUR_S:-120} python3 bench/gpu_step.py --configs coates200 --minibatch 96 --modes dasksae-4w-threads --dtypes $2 \
    --steps-per-task-4w 10 --runs-4w 5 --runs 5 --warmup-runs 1 --json $OUT/gpu-step-4w-$1.json "${@:3}" 2>&1 \
    | filter | grep -v "  gemm\|cuda graphs" | sed "s/^/$1: /" | tee -a $OUT/gpu-step.log; }
issue_table() {  # issue_table SECONDS [ARGS...]: coates200, M=96, float32 and bfloat16, into
  # $OUT/gpu-step-coates200-m96.json; the dasksae rows pipelined as dasksae train runs them (since session 54;
  # session 53's final/ table was not)
  timeout $1 python3 bench/gpu_step.py --configs coates200 --minibatch 96 \
    --modes limit,dasksae-1w,dasksae-4w-threads,torch --dtypes float32,bfloat16 --precisions float32,bfloat16 \
    --steps-per-task 10 --steps-per-task-4w 10 --runs 20 --runs-4w 5 --pipelined \
    --json $OUT/gpu-step-coates200-m96.json "${@:2}" 2>&1 | filter | grep -v "  gemm" | tee $OUT/gpu-step.log; }
floors_float32() {  # floors_float32: the float32 product and update floors over every stage (split, one-term
  # and SIMT rows; coates200, M=96) into $OUT/product-floor.log and update-floor.log, PRODUCT_S and FLOOR_S seconds
  timeout ${PRODUCT_S:-45} python3 bench/product_floor.py --precision float32 --config coates200 --minibatch 96 \
    --runs 5 --json $OUT/product-floor-float32.json 2>&1 | filter | grep "all\|kernel" | tee $OUT/product-floor.log
  timeout ${FLOOR_S:-50} python3 bench/update_floor.py --precision float32 --config coates200 --minibatch 96 \
    --runs 5 --json $OUT/update-floor-float32.json 2>&1 | filter | grep "all\|kernel" | tee $OUT/update-floor.log; }
gpu_tests() {  # gpu_tests SECONDS [PYTEST ARGS...]: the GPU tests (all, or as the arguments select) into $OUT/gpu-tests.log
  timeout $1 python3 -m pytest -m gpu -q -p no:cacheprovider -p no:logging --tb=short "${@:2}" 2>&1 | tail -30 \
    > $OUT/gpu-tests.log
  tail -1 $OUT/gpu-tests.log; }
in_process() {  # in_process LABEL [VAR=VALUE...]: the in-process coates200 step (M=96, 20 runs; STEP_DTYPE, float32
  # unless set), in a process of its own with those switches (read at import), STEP_S seconds; a line into
  # $OUT/gpu-step.log (and its CUDA graph line where STEP_GRAPHS=1)
  env "${@:2}" timeout ${STEP_S:-60} python3 bench/gpu_step.py --configs coates200 --minibatch 96 --modes in-process \
    --dtypes ${STEP_DTYPE:-float32} --runs 20 --json $OUT/gpu-step-$1-$SECONDS.json 2>&1 | filter \
    | grep "in-process\|failed\|Error${STEP_GRAPHS:+\\|cuda graphs}" | sed "s/^/$1: /" | tee -a $OUT/gpu-step.log; }
one_worker() {  # one_worker LABEL DTYPE [VAR=VALUE...]: the limit and pipelined 1-worker rows (10 steps a task, 20
  # runs) in a process of its own with those switches, ROW_S seconds; the whole output in $OUT/one-worker-LABEL.log
  local start=$SECONDS
  env "${@:3}" timeout ${ROW_S:-70} python3 bench/gpu_step.py --configs coates200 --minibatch 96 \
    --modes limit,dasksae-1w --dtypes $2 --steps-per-task 10 --runs 20 --pipelined --json $OUT/gpu-step-$1.json 2>&1 \
    | filter > $OUT/one-worker-$1.log
  echo "$1: $((SECONDS - start)) s" >> $OUT/one-worker-$1.log
  grep "dasksae-1w\|in-process\|cuda graphs\|ceilings\|failed\|Error\| s$" $OUT/one-worker-$1.log | sed "s/^/$1: /" \
    | tee -a $OUT/gpu-step.log; }
one_worker_float32() {  # one_worker_float32 SECONDS: the limit, in-process and 1-worker float32 rows (10 steps a task)
  timeout $1 python3 bench/gpu_step.py --configs coates200 --minibatch 96 --modes limit,dasksae-1w --dtypes float32 \
    --steps-per-task 10 --runs 20 --json $OUT/gpu-step-1w-float32.json 2>&1 | filter | grep -v "  gemm\|cuda graphs" \
    | tee -a $OUT/gpu-step.log; }
ratio_float32() {  # ratio_float32 SECONDS [ARGS...]: the float32 limit, in-process, 1 worker and PyTorch rows in one process
  timeout $1 python3 bench/gpu_step.py --configs coates200 --minibatch 96 --modes limit,dasksae-1w,torch --dtypes float32 \
    --precisions float32 --steps-per-task 10 --runs 20 --json $OUT/gpu-step-ratio-float32.json "${@:2}" 2>&1 | filter \
    | grep -v "  gemm\|cuda graphs" | tee -a $OUT/gpu-step.log; }
faster_of() {  # faster_of LABEL_A LABEL_B: the label whose in_process rows in $OUT/gpu-step.log have the lower mean step
  awk -v a="$1:" -v b="$2:" '$1 == a { sa += $7; na++ } $1 == b { sb += $7; nb++ }
    END { print (nb && (!na || sb / nb < sa / na)) ? substr(b, 1, length(b) - 1) : substr(a, 1, length(a) - 1) }' \
    $OUT/gpu-step.log; }
kernel_table_bfloat16() {  # kernel_table_bfloat16 SECONDS LINES [VAR=VALUE...]: the bfloat16 kernel table of the one-tile
  # step (its top 40 kernels) into $OUT/kernel-table-bfloat16.{json,log}, its first LINES lines shown
  env "${@:3}" timeout $1 python3 bench/kernel_table.py --config coates200 --minibatch 96 --dtype bfloat16 --runs 3 \
    --top 40 --json $OUT/kernel-table-bfloat16.json 2>&1 | filter | head -80 > $OUT/kernel-table-bfloat16.log
  head -$2 $OUT/kernel-table-bfloat16.log; }
table_with_gaps() {  # table_with_gaps LABEL ARGS...: a bfloat16 kernel table of coates200, M=96 (bench/kernel_table.py
  # ARGS: --tiles 2x2 --workers 4 for worker threads), its idle gaps shown, into $OUT/kernel-table-bfloat16-LABEL.*,
  # TABLE_S seconds
  timeout ${TABLE_S:-120} python3 bench/kernel_table.py --config coates200 --minibatch 96 --dtype bfloat16 --runs 3 \
    --top 50 --json $OUT/kernel-table-bfloat16-$1.json "${@:2}" 2>&1 | filter | head -90 > $OUT/kernel-table-bfloat16-$1.log
  head -30 $OUT/kernel-table-bfloat16-$1.log; grep -A 22 "by gap length" $OUT/kernel-table-bfloat16-$1.log; }
kernel_table_float32() {  # kernel_table_float32 SECONDS [VAR=VALUE...]: the float32 kernel table of the one-tile step
  env "${@:2}" timeout $1 python3 bench/kernel_table.py --config coates200 --minibatch 96 --dtype float32 --runs 3 \
    --json $OUT/kernel-table-float32.json 2>&1 | filter | head -40 > $OUT/kernel-table.log
  head -14 $OUT/kernel-table.log; }
