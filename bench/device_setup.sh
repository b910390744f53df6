# Sourced by the bench/gpu_*.sh scripts on the lent GPU machine: installs the carried wheels (WHEELS, default
# .whl) into /tmp/site, puts the repo and bench/ on the path, and defines `filter` (drops worker log noise).
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site ${WHEELS:-.whl}/*.whl \
  && export PYTHONPATH=/tmp/site:$PWD:$PWD/bench || exit 1
export PYTHONUNBUFFERED=1
filter() { grep -v "^INFO\|Warning\|warn\|^  warnings\|^$\|detach\|first_loss"; }
