"""A scaling model: the predicted update time of a coates-family network on N GPUs, before a multi-GPU machine is lent.

    python bench/scaling_model.py --json bench/results/scaling-model.json --plot bench/results/scaling-model.png

Weak scaling, as the seed measured it: every GPU holds one tile of about
``--per-gpu`` parameters (default 185M, the seed's one-GPU network), so a
network on N GPUs (an r x c grid of tiles) has N times as many; the
minibatch is fixed. One step on N GPUs takes, in this model::

    compute(P / N)                              measured: in-process step time of one GPU (a + b * params)
  + rounds * latency + halo_bytes / bandwidth   the busiest tile's halo, from the tile geometry (a dry run of
  + messages * per_message                      dasksae's step graph), over the slowest link it uses
  + staging                                     device <-> host copies where the transport is not GPU-direct
  + scheduler                                   SPMD: N + 1 tasks a step at ``--task-cost`` each, and two links,
                                                divided by ``--steps-per-task``; hidden behind compute when steps
                                                are submitted ahead ("pipelined"), added to it when not

Links (bandwidth per direction, latency; assumptions, not measurements):
NVLink 4 (H100 SXM) 450 GB/s, 3 us; PCIe 5 x16 50 GB/s, 5 us; InfiniBand NDR
400 Gb/s 48 GB/s, 5 us; HDR 200 Gb/s 24 GB/s, 5 us; 100 GbE 12 GB/s, 20 us;
10 GbE 1.2 GB/s, 50 us; TCP between processes on one host ``--tcp-bandwidth``
(default 1.5 GB/s), 100 us. Nodes have 8 GPUs; a grid of more than 8 tiles
crosses nodes, and its busiest tile is charged the inter-node link.

It also predicts one GPU shared by K workers (the only multi-worker layout
the lent machine allows): the same total compute, halos through TCP and host
memory, K + 1 tasks, and compares with ``bench/results/gpu-step-*-h100.json``.
"""

from __future__ import annotations

import argparse
import json
import math

LINKS = {
    "nvlink": (450e9, 3e-6),
    "pcie5": (50e9, 5e-6),
    "ib-ndr": (48e9, 5e-6),
    "ib-hdr": (24e9, 5e-6),
    "100gbe": (12e9, 20e-6),
    "10gbe": (1.2e9, 50e-6),
}
SCENARIOS = {
    "NVLink in node, IB NDR between": ("nvlink", "ib-ndr", True),
    "NVLink in node, IB HDR between": ("nvlink", "ib-hdr", True),
    "PCIe in node, 100 GbE between": ("pcie5", "100gbe", False),
    "PCIe in node, 10 GbE between": ("pcie5", "10gbe", False),
}
SEED = {"gpus": 64, "speedup": 47.0, "efficiency": 0.73}


def grid_for(count: int) -> tuple[int, int]:
    """The squarest r x c grid of ``count`` tiles."""
    rows = int(math.sqrt(count))
    while count % rows:
        rows -= 1
    return rows, count // rows


def network_for(parameters: float, tiles: tuple[int, int]):
    """The coates1.8b family at the input size whose parameter count is closest to ``parameters``."""
    from dasksae.network import named_config

    base = named_config("coates1.8b")
    best = None
    for size in range(96, 2000, 4):
        try:
            config = base.replace(input_shape=(size, size, 3), name=f"coates{size}")
        except Exception:
            continue
        if best is None or abs(config.encoder_parameters - parameters) < abs(best.encoder_parameters - parameters):
            best = config
        if config.encoder_parameters > 1.5 * parameters:
            break
    return best


def halo_of(config, tiles: tuple[int, int], minibatch: int, itemsize: int = 4) -> dict:
    """Busiest tile's halo bytes and messages per step, from a dry run of dasksae's step graph."""
    from dasksae.tile_array import DryExecutor, TileArray, _LocalHandle
    from dasksae.tiled_network import build_step
    from dasksae.tiling import TileGrid

    grid = TileGrid(config, *tiles)
    executor = DryExecutor()
    states = [TileArray(executor, grid.windows(k, "blocks"), {t: _LocalHandle(None) for t in grid.tiles()}) for k in range(len(config.stages))]
    scales = [_LocalHandle(None) for _ in config.stages]
    x = TileArray(executor, grid.windows(0, "input_owned"), {t: _LocalHandle(None) for t in grid.tiles()}, None,
                  config.input_shape[2] * minibatch * itemsize)
    build_step(config, grid, states, scales, x, minibatch, None, (1e-3, 0.9))
    stats = executor.statistics
    return {
        "halo_bytes_max": max(stats.halo_bytes_to.values(), default=0),
        "halo_bytes_total": stats.halo_bytes,
        "messages_max": max(stats.halo_messages_to.values(), default=0),
        "rounds": 8 * len(config.stages),  # halo exchanges on a step's critical path: 4 forward, 4 backward a stage
        "graph_tasks": stats.tasks,
    }


def compute_seconds(parameters: float, fit: dict) -> float:
    return fit["a"] + fit["b"] * parameters


def predict(n: int, scenario, per_gpu: float, minibatch: int, fit: dict, args) -> dict:
    tiles = grid_for(n)
    config = network_for(per_gpu * n, tiles)
    halo = halo_of(config, tiles, minibatch) if n > 1 else {"halo_bytes_max": 0, "messages_max": 0, "rounds": 0, "halo_bytes_total": 0, "graph_tasks": 0}
    intra, inter, gpu_direct = SCENARIOS[scenario]
    bandwidth, latency = LINKS[inter if n > 8 else intra]
    compute = compute_seconds(config.encoder_parameters / n, fit)
    transfer = (halo["rounds"] * latency + halo["halo_bytes_max"] / bandwidth) if n > 1 else 0.0
    software = halo["messages_max"] * args.per_message
    staging = 0.0 if gpu_direct or n == 1 else 2 * halo["halo_bytes_max"] / args.host_copy_bandwidth
    scheduler = ((n + 1) * args.task_cost + 2 * args.link_cost) / args.steps_per_task
    synchronous = compute + transfer + software + staging + scheduler
    pipelined = max(compute + transfer + software + staging, scheduler)
    return {
        "gpus": n, "tiles": f"{tiles[0]}x{tiles[1]}", "config": config.name, "parameters": config.encoder_parameters,
        "compute": compute, "transfer": transfer, "software": software, "staging": staging, "scheduler": scheduler,
        "step_synchronous": synchronous, "step_pipelined": pipelined, **halo,
    }


def shared_gpu(workers: int, config_name: str, minibatch: int, fit: dict, args) -> dict:
    """K workers sharing one GPU: all compute on the one card, halos through host memory and TCP."""
    from dasksae.network import named_config

    size = int(config_name[6:]) if config_name.startswith("coates") else None
    config = named_config("coates1.8b").replace(input_shape=(size, size, 3), name=config_name)
    tiles = grid_for(workers)
    halo = halo_of(config, tiles, minibatch) if workers > 1 else {"halo_bytes_total": 0, "messages_max": 0, "rounds": 0}
    compute = compute_seconds(config.encoder_parameters, fit)
    # every strip: device -> host, TCP, host -> device; all tiles' strips share the host
    transfer = halo["halo_bytes_total"] / args.tcp_bandwidth + 2 * halo["halo_bytes_total"] / args.host_copy_bandwidth
    software = halo["messages_max"] * args.per_message + halo["rounds"] * 100e-6
    scheduler = (workers + 1) * args.task_cost + 2 * args.link_cost
    return {"workers": workers, "tiles": f"{tiles[0]}x{tiles[1]}", "compute": compute, "transfer": transfer,
            "software": software, "scheduler": scheduler, "step": compute + transfer + software + scheduler,
            "halo_bytes_total": halo["halo_bytes_total"]}


def measured_rows(paths):
    rows = []
    for path in paths:
        try:
            with open(path) as handle:
                rows.extend(json.load(handle)["rows"])
        except (OSError, KeyError, json.JSONDecodeError):
            pass
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-gpu", type=float, default=185e6, help="parameters per GPU in weak scaling (default 185M)")
    parser.add_argument("--minibatch", type=int, default=96)
    parser.add_argument("--gpus", default="1,2,4,8,16,32,64")
    parser.add_argument("--task-cost", type=float, default=3.0e-3, help="scheduler seconds per task (DESIGN.md: ~3 ms)")
    parser.add_argument("--link-cost", type=float, default=5.7e-3, help="seconds per dependency through the scheduler")
    parser.add_argument("--per-message", type=float, default=0.2e-3, help="software cost of one halo message (Python, RPC)")
    parser.add_argument("--tcp-bandwidth", type=float, default=1.5e9, help="TCP between processes on one host, bytes/s")
    parser.add_argument("--host-copy-bandwidth", type=float, default=12e9, help="device <-> pageable host memory, bytes/s")
    parser.add_argument("--measured", default="bench/results/cublas-h100/final/gpu-step-coates96-m96.json,"
                                                "bench/results/cublas-h100/final/gpu-step-coates200-workers.json")
    parser.add_argument("--steps-per-task", type=int, default=1,
                        help="steps each tile's task runs before returning (1: dasksae today; more amortises the scheduler)")
    parser.add_argument("--json", default=None)
    parser.add_argument("--plot", default=None)
    args = parser.parse_args(argv)

    measured = measured_rows(args.measured.split(","))
    in_process = {r["config"]: r for r in measured if r["mode"] == "in-process" and r["minibatch"] == args.minibatch}
    if {"coates96", "coates200"} <= set(in_process):
        small, large = in_process["coates96"], in_process["coates200"]
        b = (large["step_seconds"] - small["step_seconds"]) / (large["parameters"] - small["parameters"])
        fit = {"a": small["step_seconds"] - b * small["parameters"], "b": b, "source": "in-process H100 steps, coates96 and coates200"}
    else:
        fit = {"a": 2.5e-3, "b": 139.6e-3 / 1e9, "source": "defaults (H100, M=96, 2026-11-25)"}
    print(f"compute model: {fit['a'] * 1e3:.1f} ms + {fit['b'] * 1e12:.1f} ms per billion parameters ({fit['source']})")

    results = {"fit": fit, "assumptions": {k: v for k, v in vars(args).items() if k not in ("json", "plot", "measured")},
               "links": LINKS, "seed": SEED, "weak": {}, "shared_gpu": []}
    gpus = [int(g) for g in args.gpus.split(",")]
    for scenario in SCENARIOS:
        rows = [predict(n, scenario, args.per_gpu, args.minibatch, fit, args) for n in gpus]
        base = rows[0]["step_pipelined"]
        print(f"\n{scenario} (weak scaling, {args.per_gpu / 1e6:.0f}M parameters per GPU, M={args.minibatch})")
        print(f"{'GPUs':>5}{'tiles':>7}{'params':>9}{'compute':>9}{'halo MB':>9}{'link':>8}{'msgs':>7}{'staging':>8}{'sched':>8}"
              f"{'step':>8}{'eff.':>7}{'step sync':>10}{'eff.':>7}")
        for row in rows:
            row["efficiency_pipelined"] = base / row["step_pipelined"]
            row["efficiency_synchronous"] = rows[0]["step_synchronous"] / row["step_synchronous"]
            print(f"{row['gpus']:>5}{row['tiles']:>7}{row['parameters'] / 1e9:>8.2f}B{row['compute'] * 1e3:>9.1f}"
                  f"{row['halo_bytes_max'] / 1e6:>9.1f}{row['transfer'] * 1e3:>8.1f}{row['software'] * 1e3:>7.1f}"
                  f"{row['staging'] * 1e3:>8.1f}{row['scheduler'] * 1e3:>8.1f}{row['step_pipelined'] * 1e3:>8.1f}"
                  f"{row['efficiency_pipelined']:>7.0%}{row['step_synchronous'] * 1e3:>10.1f}{row['efficiency_synchronous']:>7.0%}")
        results["weak"][scenario] = rows

    print("\none H100 shared by K workers (spmd, TCP between worker processes): predicted against measured")
    print(f"{'config':<10}{'K':>3}{'tiles':>6}{'predicted ms':>14}{'measured ms':>13}{'measured/predicted':>20}")
    for name in ("coates96", "coates200"):
        for workers in (1, 2, 4, 8):
            rows_, cols_ = grid_for(workers)
            mode = "dasksae-1w" if workers == 1 else f"dasksae-{workers}w-{rows_}x{cols_}"
            found = [r for r in measured if r["config"] == name and r["mode"] == mode and r["minibatch"] == args.minibatch
                     and r.get("precision", "float32") == "float32"]
            if not found:
                continue
            row = shared_gpu(workers, name, args.minibatch, fit, args)
            row["config"] = name
            row["measured"] = found[0]["step_seconds"]
            results["shared_gpu"].append(row)
            print(f"{name:<10}{workers:>3}{row['tiles']:>6}{row['step'] * 1e3:>14.0f}{row['measured'] * 1e3:>13.0f}"
                  f"{row['measured'] / row['step']:>20.2f}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=1)
    if args.plot:
        plot(results, args.plot)
    return results


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for scenario, rows in results["weak"].items():
        gpus = [r["gpus"] for r in rows]
        left.plot(gpus, [r["efficiency_pipelined"] * r["gpus"] for r in rows], marker="o", label=scenario)
        right.plot(gpus, [r["step_pipelined"] * 1e3 for r in rows], marker="o", label=scenario)
    seed = results["seed"]
    gpus = [r["gpus"] for r in next(iter(results["weak"].values()))]
    left.plot(gpus, gpus, color="gray", linestyle=":", label="ideal")
    left.scatter([seed["gpus"]], [seed["speedup"]], color="k", marker="*", s=120, zorder=5, label="Coates 2013: 47x on 64 GPUs")
    left.set_xscale("log", base=2)
    left.set_yscale("log", base=2)
    left.set_xlabel("GPUs")
    left.set_ylabel("throughput against 1 GPU (weak scaling)")
    left.legend(fontsize=7)
    right.set_xscale("log", base=2)
    right.set_xlabel("GPUs")
    right.set_ylabel("predicted update time (ms)")
    right.set_title("steps submitted ahead (scheduler overlapped)", fontsize=9)
    figure.suptitle(f"dasksae weak-scaling model: {results['assumptions']['per_gpu'] / 1e6:.0f}M parameters per GPU, "
                    f"M={results['assumptions']['minibatch']}, {results['assumptions']['steps_per_task']} step(s) per task",
                    fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


if __name__ == "__main__":
    main()
