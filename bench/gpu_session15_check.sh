#!/usr/bin/env bash
# On the lent GPU machine (device tool, carry [".whl"]), session 15. .whl as in bench/gpu_session14_check.sh.
# Checks out da4d71b for PART=baton (the baton is not in later commits).
# The first call was PART=next of bench/gpu_session14_check.sh (bench/results/session15/next/): 119 GPU tests passed
# (the batched copy launched through the driver among them); the 4 threads' bfloat16 row 39.9 ms sampled, driver
# launch 41.6 and 53.7 ms against CuPy's launch 44.8 and 42.2 ms; each tile's thread ran on a CPU 10.0-10.8 ms a
# step in every row, fast or slow, and waited 26.5-37.9 ms for messages: the slow rows wait longer, they do not
# work more.
#   PART=baton  dasksae.host_baton (DASKSAE_HOST_BATON, at da4d71b: one lock a process and GPU that a tile task held
#               while it did host work, let go only while it waited for a message or the device): the GPU tests of
#               worker threads with it, then the 4 threads' bfloat16 row with the baton off and on (auto), in turn,
#               three times each. About 460 s. Ran at da4d71b (bench/results/session15/baton/): 9 tests passed; off
#               39.0, 42.4, 46.2 ms, on 45.7, 55.1, 57.0 ms, each thread waiting 9-11 ms a step for the baton. Worse:
#               the threads' CPU time (10-11 ms a step each) overlaps usefully outside the GIL. Reverted.
#   PART=cpu    where the threads' CPU time goes, the part outside the GIL too: the row sampled by py-spy for every
#               thread on a CPU (--gil-samples cpu), then with C frames (cpu-native). About 200 s.
#   PART=outbox dasksae.cuda_graphs.Outbox (DASKSAE_OUTBOXES): values sent out of the graphs' memory copied into
#               buffers kept for each send and reused once the receiver dropped them, instead of new arrays each
#               step (cuda_graphs.clone's allocations were 6-8% of the step with the GIL held, in gil/ and
#               next/gil-driver). The GPU tests of graphs and threads, then the row with outboxes off and on, in
#               turn, three times each. About 440 s.
#   PART=next   (prepared for session 16, not run) all GPU tests, then the row plain, with its groups of steps
#               pipelined as dasksae train runs them (--pipelined: the next group is submitted while one runs, so
#               the GPU does not idle between tasks; 1.6-2.3 ms a step lies between a task's step and the row's in
#               outbox/), and with gc.freeze() after the warm-up (--gc-freeze: the rows with outboxes each had one
#               full collection, 50-56 ms groups), in turn, twice each. About 500 s. Each threads row now also
#               prints a tile thread's context switches a step (involuntary ones: preempted) and the share of the
#               host's CPU time the hypervisor stole during the timed runs (/proc/stat): is the slow mode the VM's?
#   PART=inplace (prepared for session 16, not run) DASKSAE_OUTBOX_IN_PLACE=1: a receiver's graphs read its
#               sender's outbox directly (adopted at capture), refilled in place once the receiver has launched
#               the step that read the previous send; else the receiver copies the send in, as all receipts do
#               today. The GPU tests of graphs (two of them with it on, checking that sends were filled in
#               place), then the row with it off and on, in turn, twice each; each threads row now prints how
#               many sends a step went into reused outboxes and how many in place. About 330 s.
source bench/device_setup.sh
card
export PY_SPY=/tmp/site/bin/py-spy
case "${PART:-baton}" in
baton)
  timeout ${TESTS_S:-120} python3 -m pytest -m gpu -q -p no:cacheprovider -p no:logging --tb=short tests/test_gpu_tiled.py -k "equals_cpu" 2>&1 | tail -8 | tee $OUT/gpu-tests.log
  for round in a b c; do
    DASKSAE_HOST_BATON=0 FOUR_S=75 four baton-off-$round bfloat16
    DASKSAE_HOST_BATON=auto FOUR_S=75 four baton-on-$round bfloat16
  done ;;
outbox)
  timeout ${TESTS_S:-90} python3 -m pytest -m gpu -q -p no:cacheprovider -p no:logging --tb=short tests/test_gpu_tiled.py -k "graphs or equals_cpu" 2>&1 | tail -8 | tee $OUT/gpu-tests.log
  for round in a b c; do
    DASKSAE_OUTBOXES=0 FOUR_S=75 four outboxes-off-$round bfloat16
    FOUR_S=75 four outboxes-on-$round bfloat16
  done ;;
next)
  timeout ${TESTS_S:-200} python3 -m pytest -m gpu -q -p no:cacheprovider -p no:logging --tb=short tests/test_gpu.py tests/test_gpu_tiled.py 2>&1 | tail -8 | tee $OUT/gpu-tests.log
  for round in a b; do
    FOUR_S=75 four plain-$round bfloat16
    FOUR_S=75 four pipelined-$round bfloat16 --pipelined
    DASKSAE_GC_FREEZE=1 FOUR_S=75 four gc-freeze-$round bfloat16  # --gc-freeze until session 17 (now the package's switch)
  done ;;
inplace)
  timeout ${TESTS_S:-200} python3 -m pytest -m gpu -q -p no:cacheprovider -p no:logging --tb=short tests/test_gpu.py tests/test_gpu_tiled.py 2>&1 | tail -8 | tee $OUT/gpu-tests.log
  for round in a b; do
    FOUR_S=75 four in-place-off-$round bfloat16
    DASKSAE_OUTBOX_IN_PLACE=1 FOUR_S=75 four in-place-on-$round bfloat16
  done ;;
cpu)
  FOUR_S=100 four cpu bfloat16 --gil-samples cpu
  FOUR_S=110 four cpu-native bfloat16 --gil-samples cpu-native ;;
esac
true
