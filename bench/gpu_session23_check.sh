#!/usr/bin/env bash
# On the lent GPU machine (device tool, carry [".whl"]), session 23. .whl as in bench/gpu_session14_check.sh's header.
#   PART=tables   where the bfloat16 step's time goes with today's defaults (the tensor-core update on): the kernel
#                 table of the one-tile in-process step and of 4 worker threads on 2x2 tiles (GPU busy against wall),
#                 and cuBLAS's bfloat16 products per stage (bench/gemm_layouts.py). About 200 s.
#                 Ran at 1b0e7d4 (session23/tables/): one tile 26.4 ms profiled, GPU busy 25.1 ms (idle 4.9%), the
#                 tensor-core update 9.40 ms; 4 threads 34.5 ms, busy 29.9 ms (idle 13.3%), and 3.16 ms of it in 400
#                 CuPy copies (copy__float32_float32) a step that one tile does not make: halo strips copied into
#                 windows (halo.assemble, sum_into, cut) by CuPy's elementwise copy of strided views.
#   PART=strips   since then the strips go through kernels/copies.py's strip kernels (16 bytes a thread, 8 strips a
#                 launch): their GPU tests and the tiled ones, the 4 threads' kernel table again, then the 4-thread
#                 rows (with the in-process step) in bfloat16 and float32. About 400 s.
#                 Ran at 6b294bb (session23/strips/): 23 GPU tests passed; the strips' copies 1.73 ms in 280 launches a
#                 step; 4 threads bfloat16 31.5 ms, 1.20x the in-process 26.2 ms; float32 59.8 ms, 1.14x of 52.3.
#   PART=forward  the bfloat16 W x and U g_r from the maps on tensor cores (kernels/mma_forward.py): its GPU tests,
#                 its time per stage against the gathered path (bench/gemm_layouts.py --mma-forward), the in-process
#                 bfloat16 step with DASKSAE_TENSOR_CORE_FORWARD 1 / 0 / 1 / 0, the one-tile kernel table, then every
#                 GPU test. About 450 s.
#                 Ran at 17e5001 (session23/forward/): 162 GPU tests passed, 18 skipped; W x from the maps 0.42 /
#                 0.80 / 0.59 ms against the gathered path's 0.53 / 0.98 / 0.76 (cuBLAS's product alone 0.32 / 0.61 /
#                 0.48), equal bit for bit; in-process bfloat16 step 25.5, 25.5 ms on against 26.4, 26.2 ms off.
#   PART=variants the forward kernel's tile variants (mma_forward.VARIANTS: 32 or 64 inner terms a tile, 3 to 6
#                 tiles of shared memory) per stage, the GPU tests of the radial dots from bfloat16 codes and of the
#                 forward kernel, and the in-process bfloat16 step twice. About 150 s.
#                 Ran at 6bf6952 (session23/variants/): k32x4 0.42 / 0.80 / 0.60 ms, k64x3 0.38 / 0.71 / 0.53, k32x6
#                 0.42 / 0.82 / 0.61, each equal to the gathered path bit for bit; 11 GPU tests passed; the in-process
#                 step (k32x4, the radial dots from bfloat16 codes) 24.7 and 24.8 ms. k64x3 is the default since.
#   PART=table    the forward kernel's GPU tests, then the issue's table (float32 and bfloat16: limit, 1 worker with
#                 the in-process step, 4 worker threads, PyTorch) with today's defaults. About 560 s.
#                 Ran at ca4fd4f (session23/table/): float32 1 worker 54.5 ms (61.9% of 33.8 ms, 4.94x PyTorch's
#                 269.5), in-process 53.2; 4 threads 60.2 ms, 1.13x; bfloat16 1 worker 24.6 ms (30.5% of 7.5 ms, 9.33x
#                 PyTorch's 229.4), in-process 24.4; 4 threads 32.5 ms, 1.33x (groups 35.3, 32.5, 30.4, 35.7, 31.2:
#                 its threads wait 21.8 ms a step for messages, 0.7 for the device). This machine measured bfloat16 GEMMs
#                 at 730 TFLOP/s against 786 in PART=strips.
#   PART=again    the float32 ratio rows (limit, 1 worker, PyTorch) and the 4 threads' bfloat16 row once more. About
#                 280 s. Ran right after on the same machine (session23/again/): float32 1 worker 54.2 ms (4.96x
#                 PyTorch's 269.1), in-process 53.0; bfloat16 4 threads 31.6 ms, 1.22x the in-process 25.9 ms of
#                 that call (groups 33.5, 31.6, 33.8, 30.3, 31.6).
#   PART=next     (prepared for the next session) every GPU test at this session's last commit (its review moved the
#                 tensor-core kernels' A-fragment loads into a device function, same PTX, and gave the two bfloat16
#                 training tests one helper: neither ran on a GPU), then the one-tile and 4-thread bfloat16 kernel
#                 tables with today's defaults. About 330 s.
#   PART=transpose (prepared for the next session) the opt-in bfloat16 W^T y with the fold in the product
#                 (kernels/mma_transpose.py, DASKSAE_TENSOR_CORE_TRANSPOSE=1; built without a GPU): its GPU tests, its
#                 time per stage against cuBLAS's product then the fold (bench/gemm_layouts.py --mma-transpose), and the
#                 in-process bfloat16 step with it 0 / 1 / 0 / 1; and the tensor-core update's epilogue variants, among
#                 them rows-l2 (the block's raw and velocity asked of L2 before its products; not yet run on a GPU),
#                 with their GPU tests. About 400 s.
source bench/device_setup.sh
bfloat16_kernel_tables() {  # the bfloat16 kernel tables: one tile in-process, then 4 worker threads on 2x2 tiles
  timeout ${TABLE_S:-150} python3 bench/kernel_table.py --config coates200 --minibatch 96 --dtype bfloat16 --runs 5 \
    --top 40 --json $OUT/kernel-table-bfloat16.json 2>&1 | filter | head -45 > $OUT/kernel-table-bfloat16.log
  head -20 $OUT/kernel-table-bfloat16.log
  timeout ${FOUR_TABLE_S:-150} python3 bench/kernel_table.py --config coates200 --minibatch 96 --dtype bfloat16 \
    --tiles 2x2 --workers 4 --runs 3 --top 40 --json $OUT/kernel-table-bfloat16-4w.json 2>&1 | filter | head -45 \
    > $OUT/kernel-table-bfloat16-4w.log
  head -12 $OUT/kernel-table-bfloat16-4w.log; }
card
case "${PART:-tables}" in
tables)
  bfloat16_kernel_tables
  timeout ${GEMM_S:-100} python3 bench/gemm_layouts.py --config coates200 --minibatch 96 --precisions bfloat16 \
    --runs 20 --json $OUT/gemm-bfloat16.json 2>&1 | filter | tee $OUT/gemm-bfloat16.log | grep current ;;
strips)
  gpu_tests ${TESTS_S:-200} tests/test_gpu.py tests/test_gpu_tiled.py -k "strip or halo or copy or gpu_tiled"
  timeout ${FOUR_TABLE_S:-150} python3 bench/kernel_table.py --config coates200 --minibatch 96 --dtype bfloat16 \
    --tiles 2x2 --workers 4 --runs 3 --top 40 --json $OUT/kernel-table-bfloat16-4w.json 2>&1 | filter | head -45 \
    > $OUT/kernel-table-bfloat16-4w.log
  head -12 $OUT/kernel-table-bfloat16-4w.log
  FOUR_S=${FOUR_S:-110} four bfloat16 bfloat16
  FOUR_S=${FOUR_S:-110} four float32 float32 ;;
forward)
  gpu_tests ${TESTS_S:-120} tests/test_gpu.py -k "tensor_core_forward"
  timeout ${GEMM_S:-120} python3 bench/gemm_layouts.py --config coates200 --minibatch 96 --precisions bfloat16 \
    --mma-forward --runs 20 --json $OUT/gemm-forward.json 2>&1 | filter | tee $OUT/gemm-forward.log | grep "W x"
  for forward in 1 0 1 0; do
    STEP_S=${STEP_S:-60} STEP_DTYPE=bfloat16 in_process tensor-core-forward-$forward DASKSAE_TENSOR_CORE_FORWARD=$forward
  done
  timeout ${TABLE_S:-120} python3 bench/kernel_table.py --config coates200 --minibatch 96 --dtype bfloat16 --runs 5 \
    --top 40 --json $OUT/kernel-table-bfloat16.json 2>&1 | filter | head -45 > $OUT/kernel-table-bfloat16.log
  head -12 $OUT/kernel-table-bfloat16.log
  mv $OUT/gpu-tests.log $OUT/gpu-tests-forward.log
  gpu_tests ${ALL_TESTS_S:-260} tests/test_gpu.py tests/test_gpu_tiled.py
  cd $OUT && tar czf logs.tgz gpu-step-tensor-core-forward-*.json && rm -f gpu-step-tensor-core-forward-*.json ;;
variants)
  timeout ${GEMM_S:-120} python3 bench/gemm_layouts.py --config coates200 --minibatch 96 --precisions bfloat16 \
    --mma-forward --runs 20 --json $OUT/gemm-forward.json 2>&1 | filter | tee $OUT/gemm-forward.log | grep "W x  *mma\|gathered\|differ"
  gpu_tests ${TESTS_S:-120} tests/test_gpu.py -k "tensor_core or radial"
  for run in 1 2; do STEP_S=${STEP_S:-60} STEP_DTYPE=bfloat16 in_process default-$run; done
  cd $OUT && tar czf logs.tgz gpu-step-default-*.json && rm -f gpu-step-default-*.json ;;
table)
  gpu_tests ${TESTS_S:-60} tests/test_gpu.py -k "tensor_core_forward"
  issue_table ${TABLE_S:-540} --pipelined ;;
next)
  gpu_tests ${TESTS_S:-200} tests/test_gpu.py tests/test_gpu_tiled.py
  bfloat16_kernel_tables ;;
transpose)
  gpu_tests ${TESTS_S:-120} tests/test_gpu.py -k "tensor_core_transpose or tensor_core_update"
  timeout ${GEMM_S:-120} python3 bench/gemm_layouts.py --config coates200 --minibatch 96 --precisions bfloat16 \
    --mma-transpose --runs 20 --json $OUT/gemm-transpose.json 2>&1 | filter | tee $OUT/gemm-transpose.log \
    | grep "W^T y  *mma\|then fold\|differ\|does not"
  timeout ${MMA_S:-120} python3 bench/gemm_layouts.py --config coates200 --minibatch 96 --precisions bfloat16 --mma \
    --runs 20 --json $OUT/gemm-mma.json 2>&1 | filter | grep "grad\|update\|stage" | tee $OUT/gemm-mma.log
  for transpose in 0 1 0 1; do
    STEP_S=${STEP_S:-60} STEP_DTYPE=bfloat16 in_process tensor-core-transpose-$transpose \
      DASKSAE_TENSOR_CORE_TRANSPOSE=$transpose
  done
  cd $OUT && tar czf logs.tgz gpu-step-tensor-core-transpose-*.json && rm -f gpu-step-tensor-core-transpose-*.json ;;
again)
  ratio_float32 ${RATIO_S:-180} --pipelined
  FOUR_S=${FOUR_S:-100} four bfloat16 bfloat16 ;;
esac
true
