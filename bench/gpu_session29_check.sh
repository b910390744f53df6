#!/bin/bash
# Session 29's GPU checks on the lent H200 (results in bench/results/session29/<part>/, each with its command.txt).
# Session 29 ran PART=next of bench/gpu_session28_check.sh (session29/next/: DASKSAE_FUSED_CUTS, now the default); the
# device was not lent again that session, nor at all in session 30, so the parts here are prepared for the next
# session with a device (session 30 added step (0)):
#   PART=next    (0) the host's time of each CUDA call at a halo exchange from 1 and 4 threads, and from 1
#                thread for 4 streams as one launcher makes them (bench/cuda_call_costs.py) and the Python of a send batch and its receipts with the send plans off
#                and on, NumPy arrays standing in (bench/exchange_host.py: on session 30's CPU machine 7-9 us a
#                send off, 5-8 on), a few seconds;
#                (1) every GPU test: the new ones are the bit-for-bit switches' (DASKSAE_FUSED_CUTS and
#                DASKSAE_SEND_PLANS off against on, four worker threads in CUDA graphs) and the graph tests' count of
#                planned sends; the default path's copy_arrays now goes through kernels/copies.CopyPlan;
#                (2) 4 worker threads in bfloat16 with DASKSAE_SEND_PLANS off and on (opt-in: a send batch that went
#                in place into its receivers' adopted outboxes is made again from its kept CopyPlan, and a receipt
#                filled in place is taken as it is; the sends were 25% of the four threads' wall time under py-spy
#                in session28/next), each a process of its own, twice in turn (ROUNDS=1: once).  About 480 s.
#   PART=launcher (session 30) DASKSAE_ONE_LAUNCHER (opt-in: one thread of the process launches the four tiles'
#                captured graphs, sends and receipts in message order): the tiled GPU tests with it on (among them
#                four threads in CUDA graphs bit for bit with it off and on, and GPU against CPU), then 4 worker
#                threads in bfloat16 with it
#                off and on, each a process of its own, twice in turn (ROUNDS=1: once).  About 450 s.  TABLE=1 (with
#                ROUNDS=1, to stay within a call's 600 s) adds the 4 threads' kernel table with the launcher.  On the CPU
#                machine, graph launches as no-ops (bench/graphed_host.py), it took the four threads' host step from
#                7.3-9.1 to 4.8-6.0 ms (bench/results/session30/launcher/).
#   PART=first   (session 30) for a session that may get one call only, as session 29 did: the launcher's
#                measurement first.  The CUDA call costs (above), the tiled GPU tests of graphs, of GPU against CPU
#                and the bit-for-bit switches with DASKSAE_ONE_LAUNCHER=1, then 4 worker threads in bfloat16 with the
#                launcher off, on, and on with DASKSAE_SEND_PLANS=1, each a process of its own.  About 480 s.
#   PART=ratio   the float32 rows with both PyTorch peers in one process (the 5x eager target's margin).  About 250 s.
source bench/device_setup.sh
card
case "${PART:-next}" in
first)
  timeout 60 python3 bench/cuda_call_costs.py --json $OUT/cuda-call-costs.json 2>&1 | tail -12 | tee $OUT/host-calls.log
  DASKSAE_ONE_LAUNCHER=1 gpu_tests ${TESTS_S:-150} tests/test_gpu_tiled.py -k "graphs or equals_cpu or bit_for_bit"
  DASKSAE_ONE_LAUNCHER=0 FOUR_S=${FOUR_S:-90} four launcher-off bfloat16
  DASKSAE_ONE_LAUNCHER=1 FOUR_S=${FOUR_S:-90} four launcher-on bfloat16
  DASKSAE_ONE_LAUNCHER=1 DASKSAE_SEND_PLANS=1 FOUR_S=${FOUR_S:-90} four launcher-plans bfloat16 ;;
next)
  timeout 120 python3 bench/cuda_call_costs.py --json $OUT/cuda-call-costs.json 2>&1 | tail -12 | tee $OUT/host-calls.log
  timeout 120 python3 bench/exchange_host.py --json $OUT/exchange-host.json 2>&1 | tail -8 | tee -a $OUT/host-calls.log
  gpu_tests ${TESTS_S:-230} tests/test_gpu.py tests/test_gpu_tiled.py
  for round in $(seq ${ROUNDS:-2}); do
    DASKSAE_SEND_PLANS=0 FOUR_S=${FOUR_S:-90} four plans-off-$round bfloat16
    DASKSAE_SEND_PLANS=1 FOUR_S=${FOUR_S:-90} four plans-on-$round bfloat16
  done ;;
launcher)
  DASKSAE_ONE_LAUNCHER=1 gpu_tests ${TESTS_S:-200} tests/test_gpu_tiled.py
  for round in $(seq ${ROUNDS:-2}); do
    DASKSAE_ONE_LAUNCHER=0 FOUR_S=${FOUR_S:-90} four launcher-off-$round bfloat16
    DASKSAE_ONE_LAUNCHER=1 FOUR_S=${FOUR_S:-90} four launcher-on-$round bfloat16
  done
  if [ -n "$TABLE" ]; then  # the 4 threads' kernel table with the launcher: how idle the GPU is left
    DASKSAE_ONE_LAUNCHER=1 timeout ${TABLE_S:-110} python3 bench/kernel_table.py --config coates200 --minibatch 96 \
      --dtype bfloat16 --tiles 2x2 --workers 4 --runs 3 --top 60 --json $OUT/kernel-table-bfloat16-4w-launcher.json \
      2>&1 | filter | head -65 > $OUT/kernel-table-bfloat16-4w-launcher.log
    head -8 $OUT/kernel-table-bfloat16-4w-launcher.log
  fi ;;
ratio)
  ratio_float32 ${RATIO_S:-300} --pipelined --compile ;;
esac
cd $OUT && tar czf ../results.tgz . && rm -f ./* && mv ../results.tgz .  # one file back (a call brings back 8 at most)
true
