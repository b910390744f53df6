#!/bin/bash
# Session 41's GPU checks (results in bench/results/session41/<part>/, each with its command.txt).
#   PART=tests (about 350 s) after DASKSAE_FLOAT32_TENSOR_CORES=1 became the default (the split TF32 kernels for float32):
#     every GPU test at the new defaults, then the float32 4-worker-thread row on 2x2 tiles beside its in-process step.
source bench/device_setup.sh
card
case "${PART:-tests}" in
tests)
  gpu_tests ${TESTS_S:-280}
  tail -8 $OUT/gpu-tests.log
  FOUR_S=${FOUR_S:-150} four float32 float32 ;;
esac
cd $OUT && tar czf ../results.tgz . && rm -f ./* && mv ../results.tgz .  # one file back
true
