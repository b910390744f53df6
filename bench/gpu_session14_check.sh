#!/usr/bin/env bash
# On the lent GPU machine (device tool, carry [".whl"]; .whl also holds py-spy's wheel: pip download py-spy), session 14.
# The first call was PART=halo of bench/gpu_session13_check.sh (bench/results/session14/halo/): 118 GPU tests passed;
# the halo change took the 4 threads' GPU busy time from 35.8 to 34.6 ms (adds 1.41 -> 0.38 ms); their bfloat16
# steps 44.2 and 41.5 ms (1.40x, 1.34x).
#   PART=gil   who holds the GIL during the 4 threads' bfloat16 step, and doing what (py-spy --gil from outside the
#              process, bench/gil_sampler.py), then the same row unsampled.
source bench/device_setup.sh
card
export PY_SPY=/tmp/site/bin/py-spy
case "${PART:-gil}" in
gil)
  FOUR_S=130 four gil bfloat16 --gil-samples
  FOUR_S=100 four plain bfloat16 ;;
esac
true
