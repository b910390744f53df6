#!/bin/bash
# Session 34's GPU checks (results in bench/results/session34/<part>/, each with its command.txt).  Session 34 ran
# gpu_session33_check.sh's PART=side on an H100 (no H200 could be had); these take the same card's figures further.
#   PART=h100  the side-stream GPU tests again (DASKSAE_UPDATE_STREAM=priority now makes its stream with CuPy's
#              Stream(priority=...), no longer the deprecated ExternalStream), the bfloat16 kernel table of the
#              one-tile step with the update in line (against PART=side's with it on a side stream), then the issue's
#              bfloat16 rows with both PyTorch peers in one process (limit, 1 worker pipelined, eager, compiled).
#              About 420 s.
#   PART=ratio32  the float32 rows with both PyTorch peers in one process.  About 240 s.
#   PART=four  4 worker threads on 2x2 tiles, pipelined, bfloat16 and float32
#              (FOUR_DTYPES: which).  About 200 s.
source bench/device_setup.sh
card
case "${PART:-h100}" in
h100)
  timeout ${TESTS_S:-120} python3 -m pytest -m gpu -q -p no:cacheprovider -p no:logging \
    -W error::DeprecationWarning:dasksae.streams --tb=short tests/test_gpu.py -k "side_stream" 2>&1 | tail -30 > $OUT/gpu-tests-side.log
  echo "side: $(tail -1 $OUT/gpu-tests-side.log)"
  DASKSAE_UPDATE_STREAM=0 timeout ${TABLE_S:-120} python3 bench/kernel_table.py --config coates200 --minibatch 96 \
    --dtype bfloat16 --runs 3 --top 40 --json $OUT/kernel-table-bfloat16-inline.json 2>&1 | filter | head -80 \
    > $OUT/kernel-table-bfloat16-inline.log
  head -4 $OUT/kernel-table-bfloat16-inline.log
  timeout ${RATIO_S:-300} python3 bench/gpu_step.py --configs coates200 --minibatch 96 --modes limit,dasksae-1w,torch \
    --dtypes bfloat16 --precisions bfloat16 --steps-per-task 10 --runs 20 --pipelined --compile \
    --json $OUT/gpu-step-ratio-bfloat16.json 2>&1 | filter | grep -v "  gemm\|cuda graphs" | tee -a $OUT/gpu-step.log ;;
ratio32)
  ratio_float32 ${RATIO_S:-330} --pipelined --compile ;;
four)  # 4 worker threads on 2x2 tiles, pipelined, 20 groups, bfloat16 then float32 (each a process of its own,
  # beside its own in-process step).  About 200 s.
  for dtype in ${FOUR_DTYPES:-bfloat16 float32}; do
    FOUR_S=${FOUR_S:-100} four pipelined-$dtype $dtype --pipelined --runs-4w 20
  done ;;
esac
cd $OUT && tar czf ../results.tgz . && rm -f ./* && mv ../results.tgz .  # one file back
true
