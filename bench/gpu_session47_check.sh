#!/bin/bash
# Session 47's GPU checks (results in bench/results/session47/<part>/, each with its command.txt).
#   PART=probe (about 60 s): the bfloat16 update's floors (bench/update_floor.py) with a row of the training's kernel
#     writing no bfloat16 copy (16 bytes a parameter instead of 18): what the update would take if the master weights'
#     high half were the products' operand (the split master weights), before building them
source bench/device_setup.sh
card
case "${PART:-probe}" in
probe)
  timeout ${FLOOR_S:-100} python3 bench/update_floor.py --config coates200 --minibatch 96 --runs 10 \
    --json $OUT/update-floor.json 2>&1 | filter | tee $OUT/update-floor.log ;;
esac
cd $OUT && tar czf ../results.tgz . && rm -f ./* && mv ../results.tgz .  # one file back
true
