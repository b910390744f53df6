#!/usr/bin/env bash
# On the lent GPU machine (device tool, carry [".whl"]), session 21. .whl as in bench/gpu_session14_check.sh's header.
# Session 21's first two calls ran bench/gpu_session20_check.sh at 55cea52 (bench/results/session21/):
#   PART=staging  in-process float32 coates200 step, DASKSAE_UPDATE_STAGING 1 / 0 / 1: 53.3, 54.4, 53.4 ms (the first
#                 0 ran past its 45 s while compiling); then, staged, limit 33.8 ms, in-process 53.2, 1 worker
#                 pipelined 54.0, PyTorch 268.9 ms: 4.98x (1 worker), 5.05x (in-process); 151 GPU tests passed.
#   PART=table    the issue's table in one process, staged: 1 worker float32 53.8 ms (63.0% of the limit, 5.00x
#                 PyTorch's 269.3 ms), bfloat16 29.8 ms (24.7%, 7.72x PyTorch's 230.1 ms); 4 threads 1.16x / 1.23x.
# DASKSAE_UPDATE_STAGING=1 is the default since (085eb0b).
#   PART=profile  the float32 kernel table of the one-tile step with today's defaults (where the 53 ms go now), then
#                 the float32 ratio rows (limit, in-process, 1 worker pipelined, PyTorch) twice, each a process of its
#                 own. About 400 s. Ran at 65e9850 (session21/profile/): 54.1 ms profiled, 52.4 ms of kernels, idle 3.2%;
#                 the weight gradient with the update 18.76 ms (7 calls; 18.69 with the prefetch, 19.23 unstaged in
#                 session 20): the staging saved about 0.5 ms of it. Ratios: 1 worker 54.1 and 54.3 ms against
#                 PyTorch's 268.9 and 269.0 (4.97x, 4.95x); in-process 53.3 and 53.1 (5.05x, 5.07x).
#   PART=positions  where the staged update's copies are issued (DASKSAE_UPDATE_STAGING): 1 at the block's start,
#                 ahead of its first operand loads (the copies, 96 KiB a block, 25 MB a wave, delay the loads the
#                 products wait for first), after-loads, first-stage; in-process float32 step, each a process of its
#                 own, twice each in turn; the staged GPU tests; then, if another position won, the float32 ratio rows
#                 with it. About 500 s.
#                 Ran at f136bbf (session21/positions/): 1 54.4 and 53.9 ms, after-loads 54.4 and 54.1, first-stage
#                 52.3 and 52.7; the 4 staged GPU tests passed; first-stage's ratio rows: in-process 52.2, 1 worker 53.6
#                 against PyTorch's 269.0 ms (5.02x, 5.15x); once more (session21/ratio/): 52.5, 53.6, 269.0 (5.02x,
#                 5.13x). DASKSAE_UPDATE_STAGING=first-stage is the default since (05eed79).
#   PART=next     (prepared for session 22, not run) all GPU tests (the float64 block sums of the code gradient and
#                 the elementwise passes now share one device function, cuda_kernels.BLOCK_PARTIAL: compiled with
#                 NVRTC here, not yet run on a GPU; and the new bfloat16 tensor-core update, kernels/mma_update.py,
#                 against NumPy), the float32 kernel table with first-stage, then the tensor-core update's time on
#                 coates200's stages beside cuBLAS's bfloat16 gradient and the update after it
#                 (bench/gemm_layouts.py --mma). About 400 s.
#   PART=tensor   (prepared, not run) the in-process bfloat16 coates200 step with DASKSAE_TENSOR_CORE_UPDATE 0 / 1 /
#                 0 / 1 (opt-in: the backward's update with its weight gradient on tensor cores), each a process of
#                 its own. About 200 s. Run PART=next first: its GPU tests check the kernel and the training with it.
#   PART=table    (prepared, not run) the issue's table in one process with today's defaults. About 500 s.
#   PART=profiler (prepared, not run) whether Dask's statistical profiler slows the steps: every worker samples the
#                 stack of its running task every 10 ms on its event loop, holding the GIL (distributed.worker.profile;
#                 40-120 us a sample of a 40-deep stack on the CPU machine, python bench/profiler_cost.py),
#                 four samplers in the 4 worker threads' process. The 4 threads' bfloat16 row and the 1-worker float32
#                 rows with DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED True / False, in turn, twice each. About 450 s.
source bench/device_setup.sh
card
case "${PART:-profile}" in
profile)
  kernel_table_float32 ${KERNELS_S:-120}
  for run in 1 2; do
    ratio_float32 ${RATIO_S:-150} --pipelined
    mv $OUT/gpu-step-ratio-float32.json $OUT/gpu-step-ratio-float32-$run.json
  done ;;
next)
  gpu_tests ${TESTS_S:-200} tests/test_gpu.py tests/test_gpu_tiled.py
  kernel_table_float32 ${KERNELS_S:-120}
  timeout ${MMA_S:-90} python3 bench/gemm_layouts.py --config coates200 --minibatch 96 --precisions bfloat16 --mma \
    --runs 20 --json $OUT/gemm-mma.json 2>&1 | filter | tee $OUT/gemm-mma.log ;;
tensor)
  for tensor_cores in 0 1 0 1; do
    DASKSAE_TENSOR_CORE_UPDATE=$tensor_cores timeout ${STEP_S:-75} python3 bench/gpu_step.py --configs coates200 \
      --minibatch 96 --modes in-process --dtypes bfloat16 --runs 20 \
      --json $OUT/gpu-step-tensor-$tensor_cores-$SECONDS.json 2>&1 | filter | grep "in-process\|failed\|Error" \
      | sed "s/^/tensor-cores-$tensor_cores: /" | tee -a $OUT/gpu-step.log
  done
  cd $OUT && tar czf logs.tgz gpu-step-*.json && rm -f gpu-step-*.json ;;
table)
  issue_table ${TABLE_S:-540} --pipelined ;;
profiler)
  for run in 1 2; do
    for enabled in True False; do
      DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=$enabled four "profile-$enabled" bfloat16 --pipelined
      DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=$enabled timeout ${ONE_S:-90} python3 bench/gpu_step.py \
        --configs coates200 --minibatch 96 --modes dasksae-1w --dtypes float32 --steps-per-task 10 --runs 20 \
        --pipelined --json $OUT/gpu-step-1w-profile-$enabled-$run.json 2>&1 | filter | grep -v "  gemm\|cuda graphs" \
        | sed "s/^/profile-$enabled: /" | tee -a $OUT/gpu-step.log
      echo "(the rows above: DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=$enabled)" | tee -a $OUT/gpu-step.log
    done
  done
  cd $OUT && tar czf logs.tgz gpu-step-*.json && rm -f gpu-step-*.json ;;
positions)
  for run in 1 2; do
    for position in 1 after-loads first-stage; do
      STEP_S=${STEP_S:-75} in_process "position-$position" DASKSAE_UPDATE_STAGING=$position
    done
  done
  best=$(awk '$1 ~ /^position-/ { s[$1] += $6; n[$1]++ } END { for (k in s) print s[k] / n[k], k }' $OUT/gpu-step.log \
    | sort -n | head -1 | awk '{ print substr($2, 10, length($2) - 10) }')
  echo "DASKSAE_UPDATE_STAGING=$best (the fastest)" | tee -a $OUT/gpu-step.log
  gpu_tests ${TESTS_S:-120} tests/test_gpu.py -k staged
  if [ "$best" != 1 ]; then DASKSAE_UPDATE_STAGING=$best ratio_float32 ${RATIO_S:-150} --pipelined; fi
  cd $OUT && tar czf logs.tgz gpu-step-*.json && rm -f gpu-step-*.json ;;
esac
true
