#!/usr/bin/env bash
# On the lent GPU machine (device tool, carry [".whl"]), session 14. .whl: ../shared/gpu/fetch-wheels.sh zarr==3.1.5
# numcodecs==0.16.3 donfig==0.8.1.post1 typing_extensions crc32c google-crc32c, then py-spy's wheel:
# python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_5_x86_64 -d .whl py-spy
# The first call was PART=halo of bench/gpu_session13_check.sh (bench/results/session14/halo/): 118 GPU tests passed;
# the halo change took the 4 threads' GPU busy time from 35.8 to 34.6 ms (adds 1.41 -> 0.38 ms); their bfloat16
# steps 44.2 and 41.5 ms (1.40x, 1.34x).
#   PART=gil   who holds the GIL during the 4 threads' bfloat16 step, and doing what (py-spy --gil from outside the
#              process, bench/gil_sampler.py), then the same row unsampled. Ran at 6d0e1d0: sampled 38.7 ms (1.24x),
#              the GIL held only 62% of the time; unsampled 45.6 ms (1.46x). The step waits for threads to wake, not
#              for the GIL?
#   PART=wake  whether a busy host is what made the sampled row fast: the host's CPU idle states, then the 4
#              threads' bfloat16 row plain, beside one spinning process, holding /dev/cpu_dma_latency at 0 us (the
#              kernel's PM QoS request that keeps CPUs out of deep idle states while the file is open), sampled
#              by py-spy again, plain again. Ran at 33c517f: 43.3, 38.4, 39.0, 39.8, 39.0 ms (in-process 30.7-31.4);
#              the guest has no cpuidle driver, so the PM QoS request probably did nothing, and plain-b was fast too.
#   PART=spin  dasksae.host_spin (DASKSAE_HOST_SPIN=auto, the default: one spinning child process beside worker
#              threads that share a GPU): its GPU tests, then the 4 threads' bfloat16 row with it off and on, in
#              turn, three times each. Ran at 6f7fd7f: 25 tests passed; off 38.8, 38.8, 47.9 ms; on 39.6, 45.3, 40.1 ms
#              (in-process 30.8-31.3): no effect. The row is bimodal between processes (38.4-40.1 or 43-48 ms),
#              whatever else is set.
#   PART=pin   the host's topology, then the row twice with the process pinned to CPUs 0-7 (taskset on this shell,
#              which the rows inherit): is the slow mode where threads land? Ran at a3fbf88: 38.7 and 38.9 ms (1.26x,
#              1.27x); one NUMA node, 16 cores, one thread a core. Both fast, as 8 of 15 unpinned rows were: no answer.
#   PART=next  (prepared for session 15, not run) the batched copy launched through the driver with packed
#              arguments (dasksae/kernels/driver_launch.py, DASKSAE_DRIVER_LAUNCH=1, the default since session 14):
#              all GPU tests, the 4 threads' row with the GIL sampled (the launch line held it 9.3% of the step,
#              building its numpy scalars 5.5%, in gil/ and wake/), then the row with the driver launch off and on,
#              in turn, twice each. About 420 s. PART=ab: three more rounds, about 370 s. Each row now also prints
#              its thread's CPU time a step (a slow mode with more CPU time is a slower host, not more waiting), the
#              process's garbage collections a step, and each group's step (is the mode set per process?).
#   PART=gc    the row with gc.freeze() after the warm-up (--gc-freeze) and without, in turn, twice each: do
#              collections, which hold the GIL, make the slow mode? About 250 s.
source bench/device_setup.sh
card
export PY_SPY=/tmp/site/bin/py-spy
case "${PART:-gil}" in
gil)
  FOUR_S=130 four gil bfloat16 --gil-samples
  FOUR_S=100 four plain bfloat16 ;;
wake)
  { cat /sys/devices/system/cpu/cpuidle/current_driver /sys/devices/system/cpu/cpu0/cpufreq/scaling_governor
    for d in /sys/devices/system/cpu/cpu0/cpuidle/state*; do echo "$(cat $d/name) latency $(cat $d/latency) us disabled $(cat $d/disable)"; done
    ls -la /dev/cpu_dma_latency; id -u; nproc; } 2>&1 | tee $OUT/host-power.txt
  FOUR_S=100 four plain-a bfloat16
  python3 -c "while True: pass" & spinner=$!
  FOUR_S=100 four spinner bfloat16
  kill $spinner
  python3 -c "import os, struct, time; f = os.open('/dev/cpu_dma_latency', os.O_WRONLY); os.write(f, struct.pack('i', 0)); print('held', flush=True); time.sleep(1000)" & qos=$!
  FOUR_S=100 four dma-latency-0 bfloat16
  kill $qos
  FOUR_S=110 four gil-b bfloat16 --gil-samples
  FOUR_S=100 four plain-b bfloat16 ;;
spin)
  timeout 150 python3 -m pytest -q -p no:cacheprovider -p no:logging --tb=short tests/test_gpu_tiled.py tests/test_host_spin.py 2>&1 | tail -5 | tee $OUT/gpu-tests.log
  for round in a b c; do
    DASKSAE_HOST_SPIN=0 FOUR_S=90 four off-$round bfloat16
    FOUR_S=90 four on-$round bfloat16
  done ;;
pin)
  { nvidia-smi topo -m; cat /sys/devices/system/node/node*/cpulist; lscpu; } > $OUT/topology.txt 2>&1
  taskset -cp 0-7 $$
  FOUR_S=80 four pin-a bfloat16
  FOUR_S=80 four pin-b bfloat16 ;;
next)
  timeout ${TESTS_S:-200} python3 -m pytest -m gpu -q -p no:cacheprovider -p no:logging --tb=short tests/test_gpu.py tests/test_gpu_tiled.py 2>&1 | tail -20 | tee $OUT/gpu-tests.log
  FOUR_S=90 four gil-driver bfloat16 --gil-samples
  for round in a b; do
    DASKSAE_DRIVER_LAUNCH=0 FOUR_S=80 four cupy-launch-$round bfloat16
    FOUR_S=80 four driver-launch-$round bfloat16
  done ;;
gc)
  for round in a b; do
    FOUR_S=80 four gc-default-$round bfloat16
    DASKSAE_GC_FREEZE=1 FOUR_S=80 four gc-freeze-$round bfloat16  # --gc-freeze until session 17 (now the package's switch)
  done ;;
ab)
  for round in c d e; do
    DASKSAE_DRIVER_LAUNCH=0 FOUR_S=80 four cupy-launch-$round bfloat16
    FOUR_S=80 four driver-launch-$round bfloat16
  done ;;
esac
true
