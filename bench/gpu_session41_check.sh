#!/bin/bash
# Session 41's GPU checks (results in bench/results/session41/<part>/, each with its command.txt).
#   PART=tests (about 260 s) after DASKSAE_FLOAT32_TENSOR_CORES=1 became the default (the split TF32 kernels for float32):
#     every GPU test at the new defaults, then the float32 4-worker-thread row on 2x2 tiles beside its in-process step.
source bench/device_setup.sh
card
case "${PART:-tests}" in
tests)
  gpu_tests ${TESTS_S:-280}
  tail -8 $OUT/gpu-tests.log
  FOUR_S=${FOUR_S:-150} four float32 float32 ;;
pinned)  # (about 170 s) bench/tensor_core_probe.py (mma.sync against wgmma, bfloat16 and TF32: rates with nothing
  # else in the loop, and wgmma's descriptors checked against NumPy), then the GPU tests of the SIMT kernels' own switches, after they were pinned to the SIMT kernels
  # (tests/test_gpu.py's _simt_kernels: with the split as the default they failed, the split taking their products),
  # the tf32 test's float32 reference likewise, and the split's own tests
  timeout ${PROBE_S:-60} python3 bench/tensor_core_probe.py --json $OUT/tensor-core-probe.json 2>&1 | filter \
    | tee $OUT/tensor-core-probe.log
  gpu_tests ${TESTS_S:-150} tests/test_gpu.py -k "implicit or backward_fields or update_in_the_weight or staged or \
tf32_training or whole_products or prefetch or split_tf32"
  tail -8 $OUT/gpu-tests.log ;;
probe)  # (about 30 s; prepared after the last call, not yet run) bench/tensor_core_probe.py with its MN-major B rows
  timeout ${PROBE_S:-60} python3 bench/tensor_core_probe.py --json $OUT/tensor-core-probe.json 2>&1 | filter \
    | tee $OUT/tensor-core-probe.log ;;
esac
cd $OUT && tar czf ../results.tgz . && rm -f ./* && mv ../results.tgz .  # one file back
true
