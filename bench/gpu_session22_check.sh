#!/usr/bin/env bash
# On the lent GPU machine (device tool, carry [".whl"]), session 22. .whl as in bench/gpu_session14_check.sh's header.
# Session 22's first call ran PART=next of bench/gpu_session21_check.sh at 624792f (bench/results/session22/next/):
#   156 GPU tests passed (the tensor-core update against NumPy and in training; cuda_kernels.BLOCK_PARTIAL);
#   float32 kernel table with first-stage: 53.6 ms profiled, the weight gradient with the update 17.73 ms (18.76 with
#   staging 1); the tensor-core update (kernels/mma_update.py) 4.30 / 8.56 / 6.62 ms on coates200's stages against
#   cuBLAS's bfloat16 gradient 0.71 / 1.39 / 1.08 ms plus the update after it 2.07 / 3.78 / 2.95: slower than the two.
#   At ~1.4 TB/s it moves its 18 bytes a parameter at a third of the copy bandwidth: each thread's epilogue loads a
#   pair of raw and velocity and stores it before the next (80 registers), about 4 KiB of loads in flight a block.
#   PART=mma      the tensor-core update's epilogue variants and the products alone (gemm-only) per stage
#                 (bench/gemm_layouts.py --mma), the tensor-core GPU tests in every variant, then the in-process
#                 bfloat16 coates200 step with DASKSAE_TENSOR_CORE_UPDATE 0 / 1 / 0 / 1. About 300 s.
#                 Ran at a594319 (session22/mma/), variants then plain, prefetch (the block's raw and velocity asked
#                 of L2 at its start), batched (a row's 6 pairs loaded before any is stepped): stage 1 4.23, 4.47, 4.17
#                 ms; gemm-only 0.71 ms (cuBLAS's gradient 0.72, the update after it 1.98); stages 2 and 3 alike. The
#                 9 GPU tests passed. The step: tensor cores off 29.6 and 29.8 ms, on 37.7 and 37.7 ms.
#                 So the products are as fast as cuBLAS's and the epilogue is what costs: a warp's loads and stores
#                 there are 8 rows' 32 bytes. Since then the default epilogue ("rows") passes the products through
#                 shared memory and steps whole rows, a float4 a thread (DASKSAE_MMA_EPILOGUE; "fragments" is the old
#                 one), and prefetch and batched are gone. The same call measures it.
#                 Ran at 8645cbf (session22/rows/): rows 2.38 / 4.00 / 3.08 ms on the three stages against cuBLAS's
#                 gradient and the update after it, 0.72 + 2.02, 1.31 + 3.77, 1.04 + 2.89 ms; fragments 4.42 / 8.73 /
#                 6.71; gemm-only 0.73 / 1.49 / 1.15. 5 GPU tests passed. The step: off 30.3 and 30.2 ms, on 43.6
#                 and 26.6 ms: one process of the two on was far slower (its CUDA graph lines were not kept).
#   PART=tensor   the in-process bfloat16 step with DASKSAE_TENSOR_CORE_UPDATE 1 / 0 / 1 / 0, the CUDA graph lines
#                 kept; then the bfloat16 rows (limit, 1 worker, 4 worker threads, PyTorch) with the tensor-core
#                 update on. About 500 s.
#                 Ran at 8e39f6c (session22/tensor/): on 26.3 and 26.3 ms, off 29.7 and 29.8 (no CUDA graphs in
#                 this mode in either); the bfloat16 rows with it on: 1 worker 26.2 ms (28.0% of the 7.4 ms
#                 limit, 8.76x PyTorch's 229.6 ms), 4 worker threads 34.1 ms (1.29x the in-process 26.4 ms).
#                 DASKSAE_TENSOR_CORE_UPDATE=1 is the default since (5cad7a7).
#   PART=default  every GPU test with the tensor-core update on by default, then the in-process bfloat16 step off / on
#                 once more. About 280 s. Ran at 5cad7a7 (session22/default/): 158 passed, 18 skipped; off 29.9 ms,
#                 on 26.6 ms.
source bench/device_setup.sh
card
case "${PART:-mma}" in
mma)
  timeout ${MMA_S:-120} python3 bench/gemm_layouts.py --config coates200 --minibatch 96 --precisions bfloat16 --mma \
    --runs 20 --json $OUT/gemm-mma.json 2>&1 | filter | grep "grad\|update\|stage" | tee $OUT/gemm-mma.log
  gpu_tests ${TESTS_S:-120} tests/test_gpu.py -k tensor_core
  for tensor_cores in 0 1 0 1; do
    STEP_S=${STEP_S:-75} STEP_DTYPE=bfloat16 in_process tensor-cores-$tensor_cores DASKSAE_TENSOR_CORE_UPDATE=$tensor_cores
  done
  cd $OUT && tar czf logs.tgz gpu-step-*.json && rm -f gpu-step-*.json ;;
tensor)
  for tensor_cores in 1 0 1 0; do
    STEP_GRAPHS=1 STEP_S=${STEP_S:-60} STEP_DTYPE=bfloat16 in_process tensor-cores-$tensor_cores DASKSAE_TENSOR_CORE_UPDATE=$tensor_cores
  done
  DASKSAE_TENSOR_CORE_UPDATE=1 timeout ${TABLE_S:-300} python3 bench/gpu_step.py --configs coates200 --minibatch 96 \
    --modes limit,dasksae-1w,dasksae-4w-threads,torch --dtypes bfloat16 --precisions bfloat16 --steps-per-task 10 \
    --steps-per-task-4w 10 --runs 20 --runs-4w 5 --pipelined --json $OUT/gpu-step-coates200-m96-bfloat16.json 2>&1 \
    | filter | grep -v "  gemm" | tee -a $OUT/gpu-step.log
  cd $OUT && tar czf logs.tgz gpu-step-tensor-cores-*.json && rm -f gpu-step-tensor-cores-*.json ;;
default)
  gpu_tests ${TESTS_S:-200} tests/test_gpu.py tests/test_gpu_tiled.py
  for tensor_cores in 0 1; do
    STEP_S=${STEP_S:-50} STEP_DTYPE=bfloat16 in_process tensor-cores-$tensor_cores DASKSAE_TENSOR_CORE_UPDATE=$tensor_cores
  done
  cd $OUT && tar czf logs.tgz gpu-step-tensor-cores-*.json && rm -f gpu-step-tensor-cores-*.json ;;
esac
true
