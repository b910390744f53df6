#!/bin/bash
# Session 24's GPU checks on the lent H200 (results in bench/results/session24/<part>/, each with its command.txt).
# The float32 kernel that PART=fold and PART=fold2 measure was dropped after them (no faster): run those parts at
# 197d7a3 (git checkout 197d7a3).
#   PART=fold     the float32 W^T y with the fold in the product (simt_gemm.add_transpose_fold,
#                 DASKSAE_SIMT_TRANSPOSE_FOLD=1; built this session without a GPU): its GPU tests, its time per stage
#                 against our product into patches then the fold (bench/gemm_layouts.py --transpose-fold), the
#                 in-process float32 step with it 0 / 1 / 0 / 1, then the float32 ratio rows (limit, 1 worker,
#                 PyTorch) with the faster of the two.  About 460 s.
#                 Ran at bce4c71 (session24/fold/): 4 GPU tests passed; the step 53.0 / 53.0 ms off, 53.0 / 52.8 on;
#                 float32 1 worker 54.2 ms, 4.97x PyTorch's 269.2.  gemm_layouts' two rows were both the fallback
#                 (it ran the float32 products with DASKSAE_GEMM=cublas, which the kernel does not take), and the
#                 kernel's loads divided by the run and the covering blocks each k-tile.
#   PART=fold2    the kernel's loads stepping on without divisions: its GPU tests, gemm_layouts --transpose-fold with
#                 DASKSAE_GEMM=simt, the in-process float32 step with it 0 / 1.  About 150 s.  Ran at 040aaf4
#                 (session24/fold2/): stages 2 and 3 3.64 / 2.85 ms against 3.64 / 2.87 for the product then the
#                 fold; the step 53.0 ms on, 52.5 off.  Dropped after (197d7a3 has it).
#   PART=table    the issue's table with today's defaults (float32 and bfloat16: limit, 1 worker with the in-process
#                 step, 4 worker threads, PyTorch), in one process.  About 240 s.  Ran without its tests at 040aaf4
#                 (session24/table/: float32 1 worker 53.6 ms, 5.03x PyTorch; bfloat16 23.1 ms, 31.8% of the limit,
#                 9.94x; 4 threads 1.13x / 1.48x).
#   PART=next     (prepared for session 25) what session 24 built after its device time: every GPU test (among them the
#                 tensor-core forward and transpose at a minibatch of 136, training at M=128, and the update's new
#                 epilogue variants rows-2, rows-wide, rows-staged, frag64-staged(-first) against NumPy), the
#                 variants timed (bench/gemm_layouts.py --mma), then the in-process bfloat16 coates200 step at
#                 M=512 with the tensor-core forward and transpose (which took only whole 96s before) and without
#                 them, in turn.  About 420 s.
#   PART=modes    (prepared for session 25) what decides the 4 threads' bfloat16 row's fast mode (29.1-29.6 ms groups)
#                 against its slow one (30-37 ms): plain, pinned to CPUs 0-7 (taskset, as session 14's two fast
#                 rows), and with a 0.2 ms GIL switch interval, in turn, twice each.  About 330 s.
#   PART=compile  (prepared for session 25) the PyTorch peer with torch.compile (never measured before; on this
#                 project's CPU machine it ran tiny 1.32x and small 2.05x faster than eager, with the same losses:
#                 bench/results/session24/compile-cpu) beside the eager peer, the limit and dasksae's 1 worker, one
#                 process a dtype (COMPILE_DTYPES, default float32 bfloat16), COMPILE_S seconds each.  About 560 s.
source bench/device_setup.sh
card
case "${PART:-fold}" in
fold)
  gpu_tests ${TESTS_S:-150} tests/test_gpu.py -k "transpose_fold or float32_transpose"
  timeout ${GEMM_S:-100} python3 bench/gemm_layouts.py --config coates200 --minibatch 96 --precisions float32 \
    --transpose-fold --runs 20 --json $OUT/gemm-transpose-fold.json 2>&1 | filter | tee $OUT/gemm-transpose-fold.log \
    | grep "W^T y  *simt fold\|then fold\|differ\|does not"
  for fold in 0 1 0 1; do
    STEP_S=${STEP_S:-60} in_process transpose-fold-$fold DASKSAE_SIMT_TRANSPOSE_FOLD=$fold
  done
  faster=$(faster_of transpose-fold-0 transpose-fold-1)
  echo "faster: $faster" | tee -a $OUT/gpu-step.log
  DASKSAE_SIMT_TRANSPOSE_FOLD=${faster##*-} ratio_float32 ${RATIO_S:-180} --pipelined
  cd $OUT && tar czf logs.tgz gpu-step-transpose-fold-*.json && rm -f gpu-step-transpose-fold-*.json ;;
fold2)
  gpu_tests ${TESTS_S:-100} tests/test_gpu.py -k "transpose_fold or float32_transpose"
  timeout ${GEMM_S:-100} python3 bench/gemm_layouts.py --config coates200 --minibatch 96 --precisions float32 \
    --transpose-fold --runs 20 --json $OUT/gemm-transpose-fold.json 2>&1 | filter | tee $OUT/gemm-transpose-fold.log \
    | grep "W^T y  *simt fold\|then fold\|differ\|does not"
  for fold in 0 1; do
    STEP_S=${STEP_S:-60} in_process transpose-fold-$fold DASKSAE_SIMT_TRANSPOSE_FOLD=$fold
  done
  cd $OUT && tar czf logs.tgz gpu-step-transpose-fold-*.json && rm -f gpu-step-transpose-fold-*.json ;;
table)
  gpu_tests ${TESTS_S:-60} tests/test_gpu.py -k "tensor_core_transpose"
  issue_table ${TABLE_S:-540} --pipelined ;;
next)
  gpu_tests ${TESTS_S:-220} tests/test_gpu.py tests/test_gpu_tiled.py
  timeout ${MMA_S:-120} python3 bench/gemm_layouts.py --config coates200 --minibatch 96 --precisions bfloat16 --mma \
    --runs 20 --json $OUT/gemm-mma.json 2>&1 | filter | grep "grad\|update\|stage" | tee $OUT/gemm-mma.log
  for tensor_cores in 1 0; do
    env DASKSAE_TENSOR_CORE_FORWARD=$tensor_cores DASKSAE_TENSOR_CORE_TRANSPOSE=$tensor_cores timeout ${STEP_S:-70} \
      python3 bench/gpu_step.py --configs coates200 --minibatch 512 --modes in-process --dtypes bfloat16 --runs 10 \
      --json $OUT/gpu-step-m512-tensor-cores-$tensor_cores.json 2>&1 | filter | grep "in-process\|failed\|Error" \
      | sed "s/^/m512-tensor-cores-$tensor_cores: /" | tee -a $OUT/gpu-step.log
  done ;;
compile)
  for dtype in ${COMPILE_DTYPES:-float32 bfloat16}; do
    timeout ${COMPILE_S:-280} python3 bench/gpu_step.py --configs coates200 --minibatch 96 \
      --modes limit,dasksae-1w,torch --dtypes $dtype --precisions $dtype --compile --steps-per-task 10 --runs 20 \
      --pipelined \
      --json $OUT/gpu-step-compile-$dtype.json 2>&1 | filter | grep -v "  gemm\|cuda graphs" | sed "s/^/$dtype: /" \
      | tee -a $OUT/gpu-step.log
  done ;;
modes)
  for round in a b; do
    FOUR_S=${FOUR_S:-75} four plain-$round bfloat16 > /dev/null
    export -f four filter && FOUR_S=${FOUR_S:-75} taskset -c 0-7 bash -c "four pinned-$round bfloat16" > /dev/null
    FOUR_S=${FOUR_S:-75} four si-0.0002-$round bfloat16 --switch-interval 0.0002 > /dev/null
  done
  grep "4w-threads\|inside a tile\|waited\|group" $OUT/gpu-step.log ;;
esac
true
