#!/usr/bin/env bash
# Start a Dask scheduler and one dask-cuda worker per GPU on this node, over UCX, and print the address
# that `dasksae train --scheduler ADDRESS --gpu` takes.  Stop everything with Ctrl-C.
#
#   cluster/local-gpus.sh                 # all GPUs, UCX (pip install 'dasksae[gpu,ucx]')
#   PROTOCOL=tcp cluster/local-gpus.sh    # without UCXX
#   CUDA_VISIBLE_DEVICES=0,1 cluster/local-gpus.sh
#
# UCX transports: NVLink between GPUs of the node (cuda_ipc) and InfiniBand between nodes are picked up by
# UCX itself (UCX_TLS, UCX_NET_DEVICES narrow them, e.g. UCX_NET_DEVICES=mlx5_0:1). Leave NVLink multicast
# (UCX_CUDA_IPC_ENABLE_MNNVL / NCCL_NVLS_ENABLE) off on lent machines. Each worker gets an RMM pool of
# RMM_POOL_SIZE (default 0.9 of the GPU's memory) that CuPy allocates from (--set-rmm-allocator-for-libs cupy:
# without it CuPy's own pool would get only what the RMM pool leaves); RMM_POOL_SIZE=off: CuPy's own pool alone.
set -euo pipefail
PROTOCOL=${PROTOCOL:-ucx}
PORT=${PORT:-8786}
RMM_POOL_SIZE=${RMM_POOL_SIZE:-0.9}
HOST=${HOST:-$(hostname -I 2>/dev/null | awk '{print $1}')}
HOST=${HOST:-127.0.0.1}
SCHEDULER_FILE=${SCHEDULER_FILE:-$PWD/dasksae-scheduler.json}
trap 'kill 0' EXIT
dask scheduler --protocol "$PROTOCOL" --host "$HOST" --port "$PORT" --scheduler-file "$SCHEDULER_FILE" &
sleep 3
POOL=(--rmm-pool-size "$RMM_POOL_SIZE" --set-rmm-allocator-for-libs cupy)
[[ $RMM_POOL_SIZE == off ]] && POOL=()
dask cuda worker --scheduler-file "$SCHEDULER_FILE" "${POOL[@]}" --nthreads 1 &
echo "scheduler: $PROTOCOL://$HOST:$PORT  (scheduler file $SCHEDULER_FILE)"
echo "train:     dasksae train --scheduler $PROTOCOL://$HOST:$PORT --gpu --tiles 2x2 --config coates1.8b --out runs/gpu"
wait
