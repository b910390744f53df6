"""A picture of which CUDA streams' kernels ran when: one lane a stream, kernels coloured by what they do.

    python bench/trace_timeline.py bench/results/session46/order/trace-4w.json.gz --start 0.30 --length 0.05 \
        --out bench/results/session46/order/timeline-4w.png --steps 30

Reads a trace written by ``bench/kernel_table.py --trace`` (JSON, gzipped or
not: each kernel's name, stream, start and length in seconds) and draws the
kernels that start in ``[start, start + length)``.  With worker threads
sharing a GPU each tile has its own stream, so the lanes show whether the
tiles' kernels run side by side or one after another.
"""

from __future__ import annotations

import argparse
import gzip
import json

KINDS = (  # (label, colour, name fragments), the first that matches
    ("W x", "tab:blue", ("filter_forward",)),
    ("W^T y", "tab:orange", ("transpose_fold",)),
    ("update", "tab:red", ("weight_grad_update",)),
    ("halo copies", "tab:green", ("copy_strips", "add_strips", "copy_segments", "Memcpy")),
    ("the rest", "tab:gray", ("",)),
)


def kind_of(name: str) -> str:
    """The label of :data:`KINDS` that a kernel family's ``name`` falls under."""
    return next(label for label, _, fragments in KINDS if any(fragment in name for fragment in fragments))


def read_trace(path: str) -> list:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as handle:
        return json.load(handle)


def lanes(trace: list, start: float, length: float) -> dict:
    """``{stream: {kind: [(start ms, length ms), ...]}}`` of the kernels that start in the window, times from its start."""
    out: dict = {}
    for kernel in trace:
        if start <= kernel["start"] < start + length:
            out.setdefault(kernel["stream"], {}).setdefault(kind_of(kernel["name"]), []).append(
                ((kernel["start"] - start) * 1e3, kernel["seconds"] * 1e3))
    return dict(sorted(out.items()))


def alone_and_shared(trace: list) -> tuple[dict, dict]:
    """Seconds of the whole trace, by kind (:func:`kind_of`), that a kernel ran with no other beside it, and that
    kernels ran beside others (each such stretch split evenly among the kernels running in it)."""
    events = sorted([(kernel["start"], 1, index) for index, kernel in enumerate(trace)]
                    + [(kernel["start"] + kernel["seconds"], -1, index) for index, kernel in enumerate(trace)])
    alone: dict = {}
    shared: dict = {}
    running: set = set()
    last = None
    for moment, change, index in events:
        if running and last is not None and moment > last:
            if len(running) == 1:
                kind = kind_of(trace[next(iter(running))]["name"])
                alone[kind] = alone.get(kind, 0.0) + moment - last
            else:
                for other in running:
                    kind = kind_of(trace[other]["name"])
                    shared[kind] = shared.get(kind, 0.0) + (moment - last) / len(running)
        if change > 0:
            running.add(index)
        else:
            running.discard(index)
        last = moment
    return alone, shared


def main(argv=None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trace")
    parser.add_argument("--start", type=float, default=0.0, help="seconds from the trace's first kernel")
    parser.add_argument("--length", type=float, default=0.05, help="seconds shown")
    parser.add_argument("--out", required=True, help="the PNG to write")
    parser.add_argument("--title", default=None)
    parser.add_argument("--steps", type=int, default=None,
                        help="the steps the whole trace holds: also print, a step, how long each kind ran alone and "
                             "beside other kernels")
    args = parser.parse_args(argv)
    trace = read_trace(args.trace)
    if args.steps:
        alone, shared = alone_and_shared(trace)
        print(f"{'ms a step':<14}{'alone':>8}{'beside others':>15}")
        for label, _, _ in KINDS:
            print(f"{label:<14}{alone.get(label, 0.0) * 1e3 / args.steps:>8.2f}"
                  f"{shared.get(label, 0.0) * 1e3 / args.steps:>15.2f}")
    shown = lanes(trace, args.start, args.length)
    if not shown:
        raise SystemExit(f"no kernel starts between {args.start:g} and {args.start + args.length:g} s of {args.trace}; "
                         "choose --start and --length within the trace")
    figure, axes = plt.subplots(figsize=(14, 1 + 0.6 * len(shown)))
    colours = {label: colour for label, colour, _ in KINDS}
    for lane, (stream, kinds) in enumerate(shown.items()):
        for kind, bars in kinds.items():
            axes.broken_barh(bars, (lane - 0.4, 0.8), facecolors=colours[kind], edgecolor="none")
    axes.set_yticks(range(len(shown)), [f"stream {stream}" for stream in shown])
    axes.set_xlabel("ms")
    axes.set_xlim(0, args.length * 1e3)
    axes.invert_yaxis()
    axes.legend(handles=[matplotlib.patches.Patch(color=colour, label=label) for label, colour, _ in KINDS],
                loc="upper center", bbox_to_anchor=(0.5, -0.25 if len(shown) > 2 else -0.4), ncol=len(KINDS))
    axes.set_title(args.title or f"{args.trace}: kernels by stream")
    figure.tight_layout()
    figure.savefig(args.out, dpi=110)
    print(f"wrote {args.out}: {sum(len(b) for k in shown.values() for b in k.values())} kernels on {len(shown)} streams")


if __name__ == "__main__":
    main()
