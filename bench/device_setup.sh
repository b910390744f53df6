# Sourced by the bench/gpu_*.sh scripts on the lent GPU machine: installs the carried wheels (WHEELS, default
# .whl) into /tmp/site, puts the repo and bench/ on the path, and defines `filter` (drops worker log noise), `card`
# (the card's name into $OUT/card.txt), `four` (the 4-worker-thread row of bench/gpu_step.py) and `issue_table` (the
# issue's table in one process: limit, 1 worker with the in-process step, 4 worker threads, PyTorch).
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
issue_table() {  # issue_table SECONDS: coates200, M=96, float32 and bfloat16, into $OUT/gpu-step-coates200-m96.json
  timeout $1 python3 bench/gpu_step.py --configs coates200 --minibatch 96 \
    --modes limit,dasksae-1w,dasksae-4w-threads,torch --dtypes float32,bfloat16 --precisions float32,bfloat16 \
    --steps-per-task 10 --steps-per-task-4w 10 --runs 20 --runs-4w 5 \
    --json $OUT/gpu-step-coates200-m96.json 2>&1 | filter | grep -v "  gemm" | tee $OUT/gpu-step.log; }
