"""Does the PyTorch peer run under ``torch.compile``, with the same losses, and how much faster (on the CPU)?

    pip install torch==2.13.0   # the CPU build this machine keeps on disk
    python bench/torch_compile_cpu.py --configs tiny,small --json out.json

Builds ``bench/torch_peer.py``'s network for each named config on the CPU,
takes ``--steps`` SGD steps on one random batch eagerly and as many with the
loss compiled (``torch.compile``), and prints a table: the first step (for
the compiled peer, the compile), the median of the others, and the largest
difference between the two runs' losses relative to the loss.  A check for
the GPU call that times the compiled peer beside dasksae
(``PART=compile bash bench/gpu_session24_check.sh``); the CPU's figures say
nothing of the GPU's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy

sys.path.insert(0, os.path.dirname(__file__))


def run(config_name: str, minibatch: int, steps: int, compiled: bool) -> dict:
    """``steps`` SGD steps of the peer on one batch: the first step's seconds, the median of the rest, the losses."""
    from dasksae import named_config
    from dasksae.reference import init_params
    from torch_peer import TorchNetwork, make_step, to_torch_batch

    config = named_config(config_name)
    network = TorchNetwork(config, init_params(config, seed=0), "cpu")
    step = make_step(network, 1e-3, 0.9, "float32", compiled)
    x = to_torch_batch(numpy.random.default_rng(0).standard_normal(config.input_shape + (minibatch,)).astype(
        numpy.float32), device="cpu")
    seconds, losses = [], []
    for _ in range(steps):
        started = time.perf_counter()
        losses.append(float(step(x).detach()))
        seconds.append(time.perf_counter() - started)
    return {"first_seconds": seconds[0], "step_seconds": statistics.median(seconds[1:]), "losses": losses}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="tiny,small")
    parser.add_argument("--minibatch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    import torch

    rows = []
    print(f"{'config':>8} {'peer':>9} {'first s':>8} {'step ms':>8} {'x eager':>8} {'loss diff':>10}")
    for name in args.configs.split(","):
        eager = run(name, args.minibatch, args.steps, False)
        compiled = run(name, args.minibatch, args.steps, True)
        difference = max(abs(a - b) / abs(a) for a, b in zip(eager["losses"], compiled["losses"]))
        for peer, result in (("eager", eager), ("compiled", compiled)):
            speedup = eager["step_seconds"] / result["step_seconds"]
            rows.append({"config": name, "peer": peer, "minibatch": args.minibatch, **result,
                         "speedup_over_eager": speedup, "largest_relative_loss_difference": difference})
            print(f"{name:>8} {peer:>9} {result['first_seconds']:>8.1f} {result['step_seconds'] * 1e3:>8.1f} "
                  f"{speedup:>8.2f} {difference:>10.1e}", flush=True)
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"torch": torch.__version__, "device": "cpu", "cpus": os.cpu_count(), "rows": rows}, file,
                      indent=1)


if __name__ == "__main__":
    main()
