"""The ``dasksae`` command."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys

from .errors import DasksaeError

#: ``--steps-per-task``'s default as its help gives it (``dasksae.train.STEPS_PER_TASK``, not imported here so that
#: ``dasksae --help`` does not load NumPy and Zarr; a test checks that the two agree)
STEPS_PER_TASK_SHOWN = 10


def _print_info(info: dict) -> None:
    from .accounting import format_bytes

    print(f"config {info['config']}  objective {info['objective']}  input {'x'.join(map(str, info['input_shape']))}")
    print(f"  minibatch {info['minibatch']}  dtype {info['dtype']}")
    print(f"{'layer':<16}{'input':>14}{'output':>14}{'parameters':>16}{'GFLOP/update':>14}  detail")
    for layer in info["layers"]:
        detail = ""
        if layer["name"].endswith("filter"):
            detail = (
                f"field {'x'.join(map(str, layer['field']))} step {layer['step']} block {'x'.join(map(str, layer['block']))}"
                f", GEMM {layer['gemm'][0]} x ({layer['gemm'][1]}x{layer['gemm'][2]} @ {layer['gemm'][2]}x{layer['gemm'][3]})"
            )
        elif layer["name"].endswith("pool"):
            detail = f"L2 pool {layer['size']}x{layer['size']} stride {layer['stride']}"
        else:
            detail = f"LCN {layer['size']}x{layer['size']}"
        flops = layer.get("flops_per_update")
        print(
            f"{layer['name']:<16}{'x'.join(map(str, layer['input'])):>14}{'x'.join(map(str, layer['output'])):>14}"
            f"{layer['parameters']:>16,}{(flops / 1e9 if flops else 0):>14.2f}  {detail}"
        )
    headline = info["headline_parameters"]
    against = f"  ({info['parameters'] / headline - 1:+.1%} of the headline {headline / 1e9:g}B)" if headline else ""
    print(f"parameters (encoder connections) {info['parameters']:,}{against}")
    print(f"trainable parameters {info['trainable_parameters']:,}")
    print(f"FLOPs per update {info['flops_per_update']:,} ({info['flops_per_update'] / 1e12:.3f} TFLOP)")
    print("memory of one update:")
    for kind, count in info["bytes"].items():
        print(f"  {kind:<16}{format_bytes(count):>12}")
    print(f"  bytes per trainable parameter {info['bytes_per_parameter']:.2f}")
    if info["note"]:
        print(f"note: {info['note']}")


def command_info(args) -> int:
    from .accounting import describe
    from .network import load_config
    from .reference import split_dtype

    if args.minibatch < 1:
        raise DasksaeError(f"--minibatch must be a positive integer, got {args.minibatch}.")
    config = load_config(args.config)
    storage, _ = split_dtype(args.dtype)
    info = describe(config, args.minibatch, args.dtype)
    if args.tiles:
        from .accounting import format_bytes, largest_tile_bytes
        from .tiled_network import step_plan
        from .tiling import TileGrid

        info["tiling"] = step_plan(config, TileGrid.parse(config, args.tiles), args.minibatch, storage.itemsize)
        info["tiling"]["bytes_largest_tile"] = largest_tile_bytes(config, args.minibatch, args.dtype, info["tiling"])
    if args.json:
        print(json.dumps(info))
    else:
        _print_info(info)
        if args.tiles:
            plan = info["tiling"]
            print(f"tiled {plan['tiles']}: largest tile {plan['parameters_largest_tile']:,} parameters "
                  f"(smallest {plan['parameters_smallest_tile']:,}), about {format_bytes(plan['bytes_largest_tile'])} a step; a joint step is {plan['graph_tasks']:,} tile functions, "
                  f"critical path {plan['critical_path']}; halos {plan['halo_bytes'] / 1e6:,.1f} MB a step, the busiest tile "
                  f"receiving {plan['halo_bytes_busiest_tile'] / 1e6:,.1f} MB in {plan['halo_messages_busiest_tile']} messages")
    return 0


def command_train(args) -> int:
    if args.single_process:
        from .train import train_single_process

        train_single_process(
            config_name=args.config, steps=args.steps, minibatch=args.minibatch, lr=args.lr, momentum=args.momentum,
            dtype=args.dtype, seed=args.seed, out=args.out, greedy_steps=args.greedy_steps,
        )
        return 0
    from .cluster import connect
    from .network import load_config
    from .tiling import TileGrid, at_most_tiles
    from .train import STEPS_PER_TASK, _check_output_folder, check_run_options, train_tiled

    check_run_options(args.steps, args.minibatch, args.greedy_steps, args.lr, args.momentum)  # before a cluster starts
    config = load_config(args.config)
    grid = TileGrid.parse(config, args.tiles)  # a tiling that does not fit is refused before any cluster starts
    if args.profile:
        try:
            import bokeh  # noqa: F401
        except ImportError:
            raise DasksaeError("--profile writes a Dask performance report, which needs bokeh: pip install 'dasksae[dashboard]'.") from None
    joining = bool(args.scheduler or args.scheduler_file)
    workers = args.workers if args.workers is not None else grid.count
    if not joining and grid.count > workers:
        raise DasksaeError(
            f"{args.tiles} tiles need {grid.count} workers but --workers is {workers}; use {at_most_tiles(workers)} or more workers."
        )
    if args.out is not None:
        _check_output_folder(args.out, bool(args.resume))
    elif args.resume:
        raise DasksaeError("--resume continues the run in --out; give --out the run's folder.")
    if args.workers_per_gpu is not None:
        if args.workers_per_gpu < 1:
            raise DasksaeError(f"--workers-per-gpu must be a positive integer, got {args.workers_per_gpu}.")
        workers = args.workers_per_gpu
        if not joining and grid.count > workers:
            raise DasksaeError(f"{args.tiles} tiles need {grid.count} workers but --workers-per-gpu is {workers}; "
                              f"give --workers-per-gpu {grid.count} or use {at_most_tiles(workers)}.")
    gpu = args.gpu or args.workers_per_gpu is not None
    if (args.protocol, args.rmm_pool) != ("auto", "auto") and (joining or not args.gpu or args.workers_per_gpu is not None):
        raise DasksaeError("--protocol and --rmm-pool set up the cluster that --gpu starts (one dask-cuda worker a GPU); "
                           "a joined cluster's workers are set up where they start (cluster/local-gpus.sh).")
    with connect(args.scheduler, args.scheduler_file, workers, timeout=args.connect_timeout, dashboard=args.dashboard,
                 gpu=gpu, workers_per_gpu=args.workers_per_gpu, threads=args.worker_threads, protocol=args.protocol,
                 rmm_pool=args.rmm_pool, say=print) as client:
        if args.dashboard and client.dashboard_link:
            print(f"dashboard: {client.dashboard_link}")
        report = contextlib.nullcontext()
        if args.profile:
            from distributed import performance_report

            report = performance_report(filename=args.profile)
        with report:
            train_tiled(
                client, config_name=args.config, tiles=args.tiles, steps=args.steps, greedy_steps=args.greedy_steps,
                minibatch=args.minibatch, lr=args.lr, momentum=args.momentum, dtype=args.dtype, seed=args.seed,
                out=args.out, resume=args.resume, checkpoint_every=args.checkpoint_every,
                device="cuda" if gpu else "cpu", execution=args.execution, data=args.data,
                steps_per_task=args.steps_per_task if args.steps_per_task is not None else STEPS_PER_TASK,
            )
    if args.profile:
        print(f"performance report: {args.profile}")
    return 0


def command_data_build(args) -> int:
    from .data import build_bundled_store
    from .network import load_config

    if args.frames < 16:
        raise DasksaeError(f"--frames must be at least 16, got {args.frames}.")
    config = load_config(args.config)
    group = build_bundled_store(args.store, config, frames=args.frames, face_fraction=args.face_fraction,
                                tiles=args.tiles, seed=args.seed)
    attrs = dict(group.attrs)
    print(f"{args.store}: {attrs['train_frames']} training frames ({attrs['face_fraction']:.1%} faces), "
          f"{attrs['test_faces']} test faces and {attrs['test_distractors']} distractors; "
          f"{attrs['preprocessing']['whitening']}; chunks {tuple(attrs['chunks'])}")
    return 0


def command_demo(args) -> int:
    from .demo import run_demo

    run_demo(args.out, quick=args.quick, config_name=args.config, tiles=args.tiles, workers=args.workers,
             steps=args.steps, face_fraction=args.face_fraction, seed=args.seed, worker_threads=not args.worker_processes)
    return 0


def command_neurons(args) -> int:
    from pathlib import Path

    import zarr

    from .checkpoint import open_checkpoint, weight_names
    from .data import add_test_set_from_folders, open_store
    from .demo import check_evaluation_fits, report_on
    from .network import NetworkConfig
    from .train import _check_output_folder

    group, attrs = open_checkpoint(args.checkpoint)
    config = NetworkConfig.from_dict(attrs["config"])
    open_store(args.data, config)
    if bool(args.faces) != bool(args.distractors):
        raise DasksaeError("give both --faces and --distractors (folders of images), or neither.")
    out = _check_output_folder(args.out, resume=True)
    store = args.data
    if args.faces:
        import shutil

        store = str(out / "test-data")
        shutil.copytree(args.data, store, dirs_exist_ok=True)
        add_test_set_from_folders(store, args.faces, args.distractors)
    training = {"checkpoint": str(args.checkpoint), "step": attrs["step"]}
    if args.scheduler:  # the responses computed by the tiles on the cluster's workers; no weights come here
        from .cluster import connect
        from .tiled_network import TiledNetwork

        with connect(args.scheduler, timeout=args.connect_timeout) as client:
            network = TiledNetwork.load(args.checkpoint, args.tiles, client, device="cuda" if args.gpu else "cpu")
            report = report_on(out, config, None, store, {**training, "on": args.scheduler}, network=network,
                               say=lambda *a, **k: None)
    else:
        check_evaluation_fits(config, zarr.open_group(str(store), mode="r")["test/frames"].shape[-1])  # before a load
        params = []
        for k in range(len(config.stages)):
            entry = {}
            for name in weight_names(config.objective):
                array = group[f"stage{k + 1}/{name}"]
                entry[name] = array[...] if array.ndim == 0 else array[:]
            params.append(entry)
        report = report_on(out, config, params, store, training, say=lambda *a, **k: None)
    print(f"{Path(out) / 'report.md'}: best neuron, held out {report['best_accuracy']:.1%} (AUC {report['auc']:.3f}); "
          f"random net {report['random_net_accuracy']:.1%}; guessing {report['guess_accuracy']:.1%}; "
          f"Le 2012 protocol {report['le2012_protocol']['best_accuracy']:.1%}")
    return 0


def command_inspect(args) -> int:
    from .checkpoint import describe

    info = describe(args.checkpoint, verify=not args.no_verify)
    if args.json:
        print(json.dumps(info))
        return 0
    config = info["config"]
    print(f"checkpoint {info['checkpoint']}")
    print(f"  config {config['name']} ({config['objective']}, input {'x'.join(map(str, config['input_shape']))})  "
          f"step {info['step']}  tiles {info['tiles']}  dtype {info['dtype']}")
    if info["training"]:
        print("  " + "  ".join(f"{key} {value}" for key, value in info["training"].items()))
    for layer in info["layers"]:
        parts = [f"{key.replace('_norm', '')} norm {value:.6g}" for key, value in layer.items() if key.endswith("_norm")]
        if "scale" in layer:
            parts.append(f"a {layer['scale']:.6g}")
        print(f"  stage {layer['stage']}: " + ", ".join(parts))
    print(f"digest {info['digest']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dasksae", description="Locally-connected sparse autoencoders on Dask.")
    commands = parser.add_subparsers(dest="command", required=True)

    info = commands.add_parser("info", help="layer shapes, parameters, FLOPs and memory of a config")
    info.add_argument("config", help="a named config (tiny, small, le2012, coates1.8b, coates11.2b) or a JSON file")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.add_argument("--minibatch", type=int, default=96, help="examples per update (default 96)")
    info.add_argument("--dtype", default="float32", help="float32 (default), float64, tf32 or bfloat16 (see train --dtype)")
    info.add_argument("--tiles", default=None, help="also plan this tiling (RxC): per-tile parameters, tasks, halo bytes")
    info.set_defaults(handler=command_info)

    train = commands.add_parser(
        "train", help="train a network over tiles on a Dask cluster (a local one by default)",
        epilog="The GPU path's DASKSAE_* environment switches (set before the workers start; a bad value is refused) "
               "are listed in README.md and described in docs/switches.md; those not at their defaults are printed "
               "at the start of a run.")
    train.add_argument("--config", default="tiny", help="a named config or a JSON file (default tiny)")
    train.add_argument("--tiles", default="2x2", help="tile grid RxC over every layer's map (default 2x2)")
    train.add_argument("--workers", type=int, default=None, help="local cluster: worker processes (default: one per tile)")
    train.add_argument("--scheduler", default=None, help="join the cluster of this scheduler address instead")
    train.add_argument("--scheduler-file", default=None, help="join the cluster described by this scheduler file")
    train.add_argument("--connect-timeout", type=float, default=10.0, help="seconds to wait for --scheduler (default 10)")
    train.add_argument("--steps", type=int, default=300, help="joint updates in the whole run (default 300)")
    train.add_argument("--greedy-steps", type=int, default=0, help="greedy layer-wise steps per stage first (default 0)")
    train.add_argument("--minibatch", type=int, default=32)
    train.add_argument("--lr", type=float, default=1e-3)
    train.add_argument("--momentum", type=float, default=0.9)
    train.add_argument("--dtype", default="float32",
                       help="float32 (default), float64, or tf32 / bfloat16: float32 weights and optimiser state, "
                            "filter products in that precision with float32 accumulation")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--out", default=None, help="folder for metrics.jsonl and checkpoints/ (optional)")
    train.add_argument("--resume", nargs="?", const=True, default=None, metavar="CHECKPOINT",
                       help="continue the run in --out from its latest checkpoint (or from CHECKPOINT)")
    train.add_argument("--checkpoint-every", type=int, default=0, help="also checkpoint every N steps (default: only at the end)")
    train.add_argument("--data", default=None, metavar="STORE",
                       help="train on a data store (dasksae data build) read by each tile on its worker; "
                       "default: random whitened crops of the scikit-image photos, sent from the client")
    train.add_argument("--steps-per-task", type=int, default=None,
                       help="run K steps inside each tile's task (one tile or spmd): the scheduler's cost paid once per K "
                       f"(default {STEPS_PER_TASK_SHOWN}; one step a task left 10-30%% of a GPU step to the scheduler, and on 2 "
                       "CPU cores tiny 2x2 took 43-48 ms a step against 29-34 ms at 10: bench/steps_per_task.py); checkpoints still fall "
                       "on their steps")
    train.add_argument("--execution", choices=["spmd", "graph"], default="spmd",
                       help="spmd (default): one task per tile and step, halos sent worker to worker; "
                       "graph: a task per layer and halo strip")
    train.add_argument("--gpu", action="store_true", help="CuPy chunks on GPU workers (a LocalCUDACluster unless --scheduler)")
    train.add_argument("--protocol", choices=["auto", "tcp", "ucx"], default="auto",
                       help="with --gpu, the started cluster's transport (default auto: UCX where distributed-ucxx is "
                       "installed, else TCP)")
    train.add_argument("--rmm-pool", choices=["auto", "on", "off"], default="auto",
                       help="with --gpu, each worker starts an RMM pool of 90%% of the smallest free GPU memory that CuPy "
                       "allocates from (default auto: where RMM is installed; off: CuPy's own pool)")
    train.add_argument("--workers-per-gpu", type=int, default=None,
                       help="with --gpu on one machine: K plain workers sharing GPU 0 (threads of one process) instead of dask-cuda")
    train.add_argument("--worker-threads", action="store_true",
                       help="local CPU cluster: the workers as threads of one process, halos handed over by reference "
                       "(on 2 cores a tiny 2x2 step took 99 ms this way against 235 ms as processes)")
    train.add_argument("--profile", default=None, metavar="REPORT.html",
                       help="write a Dask performance report of the run (needs bokeh)")
    train.add_argument("--dashboard", action="store_true", help="local cluster: serve the Dask dashboard on :8787")
    train.add_argument("--single-process", action="store_true", help="the single-process reference loop instead (no Dask)")
    train.set_defaults(handler=command_train)

    data = commands.add_parser("data", help="build the bundled data set as a whitened, tile-chunked Zarr store")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    build = data_commands.add_parser("build", help="stills and faces shipped in scikit-image -> STORE")
    build.add_argument("store", help="folder of the Zarr store to write")
    build.add_argument("--config", default="tiny", help="the network whose input shape the frames take (default tiny)")
    build.add_argument("--frames", type=int, default=4096, help="training frames (default 4096)")
    build.add_argument("--face-fraction", type=float, default=0.1, help="fraction of training frames that are faces (default 0.1)")
    build.add_argument("--tiles", default=None, help="chunk the frames along this tiling's input windows (RxC)")
    build.add_argument("--seed", type=int, default=0)
    build.set_defaults(handler=command_data_build)

    demo = commands.add_parser("demo", help="the face-neuron experiment on bundled data: build, train, evaluate, report")
    demo.add_argument("--out", default="demo", help="folder for the data, the run, report.md and report.json (default demo)")
    demo.add_argument("--quick", action="store_true", help="a smoke run of a few minutes")
    demo.add_argument("--config", default="tiny")
    demo.add_argument("--tiles", default="2x2")
    demo.add_argument("--workers", type=int, default=None, help="local workers (default: one per tile)")
    demo.add_argument("--worker-processes", action="store_true",
                      help="the local CPU workers as processes talking over TCP (default: threads of one process, "
                      "whose halos go by reference: on 2 cores a tiny 2x2 step took 99 ms against 235 ms as processes)")
    demo.add_argument("--steps", type=int, default=None, help="training steps (default 2000, quick 60)")
    demo.add_argument("--face-fraction", type=float, default=0.3, help="fraction of training frames that are faces (default 0.3)")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(handler=command_demo)

    neurons = commands.add_parser("neurons", help="search a checkpoint's top layer for face-selective neurons")
    neurons.add_argument("checkpoint", help="a checkpoint, or a run's checkpoints/ folder (its latest)")
    neurons.add_argument("--test-set", "--data", dest="data", required=True,
                         help="the data store holding the test set (and the whitening the network was trained with)")
    neurons.add_argument("--faces", default=None, help="instead of the store's test set: a folder of face images (e.g. LFW)")
    neurons.add_argument("--distractors", default=None, help="... and a folder of distractor images (e.g. ImageNet crops)")
    neurons.add_argument("--out", default="neurons", help="folder for report.md, report.json and pictures (default neurons)")
    neurons.add_argument("--scheduler", default=None, metavar="ADDRESS",
                         help="compute the responses on this Dask cluster's workers, each tile reading its own weights "
                         "there (for networks this process cannot hold; no optimal stimuli then)")
    neurons.add_argument("--tiles", default=None, help="with --scheduler: the tiling (default: the checkpoint's)")
    neurons.add_argument("--gpu", action="store_true", help="with --scheduler: the tiles on the workers' GPUs")
    neurons.add_argument("--connect-timeout", type=float, default=10.0, help="seconds to wait for --scheduler (default 10)")
    neurons.set_defaults(handler=command_neurons)

    inspect = commands.add_parser("inspect", help="config, step, weight norms and digest of a checkpoint")
    inspect.add_argument("checkpoint", help="a checkpoint folder, or a run's checkpoints/ folder (its latest)")
    inspect.add_argument("--json", action="store_true", help="print one JSON object")
    inspect.add_argument("--no-verify", action="store_true", help="skip recomputing the digest")
    inspect.set_defaults(handler=command_inspect)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        from .switches import check_environment

        check_environment()  # a bad DASKSAE_* value: one line, before any work
        return args.handler(args)
    except DasksaeError as error:
        print(f"dasksae: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dasksae: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`dasksae info ... | head`): stop quietly, as Unix tools do
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
