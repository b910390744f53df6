"""`dasksae demo`: the face-neuron experiment end to end on data that ships with scikit-image.

Build the bundled data set, train a small network over tiles on a local
cluster without labels, look for the top-layer neuron that best tells faces
from distractors, and write ``report.md``, ``report.json`` and pictures.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy

from .errors import DasksaeError


def _gpu_present() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def _protocols(evaluation) -> dict:
    return {
        "held_out": {k: evaluation.held_out[k] for k in ("best_accuracy", "best_accuracy_std", "auc", "auc_std")},
        "le2012": {k: evaluation.le2012[k] for k in ("best_accuracy", "auc", "neuron", "threshold")},
        "neurons": evaluation.neurons,
    }


def run_demo(out, quick: bool = False, config_name: str = "tiny", tiles: str = "2x2", workers: int | None = None,
             steps: int | None = None, face_fraction: float = 0.3, minibatch: int = 32, lr: float = 1e-3, seed: int = 0,
             progress: bool = True, worker_threads: bool = True) -> dict:
    from .cluster import connect
    from .data import TEST_DISTRACTORS, TEST_FACES, build_bundled_store, check_face_fraction
    from .network import load_config
    from .optim import check_hyperparameters
    from .tiling import TileGrid, at_most_tiles
    from .train import _check_output_folder, train_tiled

    started = time.perf_counter()
    # everything that can be refused is refused before the output folder is made or anything is built
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise DasksaeError(f"--steps must be a positive integer, got {steps!r}; leave it out for the default (2000, quick 60).")
    check_face_fraction(face_fraction)
    check_hyperparameters(lr, 0.9)
    config = load_config(config_name)
    grid = TileGrid.parse(config, tiles)
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise DasksaeError(f"--workers must be a positive integer, got {workers!r}.")
    if workers is not None and workers < grid.count:
        raise DasksaeError(f"{tiles} tiles need {grid.count} workers but --workers is {workers}; "
                           f"use {at_most_tiles(workers)} or more workers.")
    check_evaluation_fits(config, TEST_FACES + TEST_DISTRACTORS)  # not after training: the evaluation runs here
    out = _check_output_folder(out, resume=False)
    if (out / "run" / "checkpoints" / "LATEST").exists():
        raise DasksaeError(f"{out} already holds a demo run; choose another --out, or remove {out} to run it again.")
    workers = workers or grid.count
    steps = steps or (60 if quick else 2000)
    frames = 2 * int(numpy.prod(config.input_shape)) if quick else 4 * int(numpy.prod(config.input_shape))
    say = print if progress else (lambda *a, **k: None)
    say(f"[1/4] building the bundled data set ({frames} training frames, {face_fraction:.0%} faces) in {out / 'data'}")
    build_bundled_store(out / "data", config, frames=frames, face_fraction=face_fraction, tiles=tiles, seed=seed)
    device = "cuda" if _gpu_present() else "cpu"
    kind = "threads of one process" if worker_threads or device == "cuda" else "processes"
    say(f"[2/4] training {config.name} on {tiles} tiles over {workers} local workers ({kind}, {device}), {steps} steps, no labels")
    with connect(workers=workers, gpu=device == "cuda", workers_per_gpu=workers if device == "cuda" else None,
                 threads=worker_threads) as client:
        network, records = train_tiled(
            client, config_name=config_name, tiles=tiles, steps=steps, minibatch=minibatch, lr=lr, seed=seed,
            out=out / "run", data=str(out / "data"), device=device, progress=progress,
        )
        params = network.parameters()
    say("[3/4] evaluating every top-layer neuron on the held-apart test set")
    training = {
        "tiles": tiles, "workers": workers, "workers_as": kind, "device": device, "steps": steps, "minibatch": minibatch, "lr": lr,
        "first_loss": records[0]["loss"] if records else None, "last_loss": records[-1]["loss"] if records else None,
        **_mean_losses(records),
        "quick": quick,
    }
    report = report_on(out, config, params, out / "data", training, seed=seed, started=started, say=say)
    say(f"report: {out / 'report.md'} (best neuron, held out: {report['best_accuracy']:.1%} against "
        f"{report['random_net_accuracy']:.1%} random net, {report['guess_accuracy']:.1%} guessing; {report['seconds']:.0f} s)")
    return report


def check_evaluation_fits(config, images: int, available: int | None = None) -> int:
    """Refuse, in one sentence, an evaluation of ``config``'s neurons that this process cannot hold: :func:`report_on`
    keeps the trained weights and a random network's in float64, and the activations of ``images`` test images
    (``available``: bytes of memory free, by default psutil's).  Returns the bytes it plans."""
    from .accounting import describe, format_bytes

    planned = describe(config, images, "float64")["bytes"]["total"]  # its momentum's share is the random network's
    if available is None:
        import psutil

        available = psutil.virtual_memory().available
    if planned > available:
        raise DasksaeError(
            f"evaluating {config.name}'s neurons on {images} test images holds about {format_bytes(planned)} in this "
            f"process (its weights and a random network's in float64, and their activations), and this machine has "
            f"{format_bytes(available)} free; evaluate it on a cluster's workers (dasksae neurons CHECKPOINT "
            f"--scheduler ADDRESS), or where there is more memory.")
    return planned


def report_on(out, config, params, store_path, training: dict, seed: int = 0, started: float | None = None,
              say=print, network=None) -> dict:
    """Evaluate ``params``' top-layer neurons on the store's test set; write report.md, report.json, pictures.

    ``network``: instead, a :class:`~dasksae.tiled_network.TiledNetwork` holding the trained weights on a cluster.
    The responses are then computed there, and the baseline by a random network of the same tiling made there, and
    the filters' picture reads its 64 filters there: the weights never come to this process (``params`` is not
    used).  The optimal stimuli are left out: they need the input gradient of this process's reference network.
    """
    import zarr

    from .neurons import evaluate, guessing, network_responses, random_filter_responses, template_responses
    from .reference import init_params

    started = time.perf_counter() if started is None else started
    out = Path(out)
    group = zarr.open_group(str(store_path), mode="r")
    attrs = dict(group.attrs)
    test = group["test/frames"][:].astype(numpy.float64)
    labels = group["test/labels"][:].astype(bool)
    raw = group["test/raw"][:]
    if network is None:
        params64 = [{k: numpy.asarray(v, dtype=numpy.float64) for k, v in p.items()} for p in params]
        filters = stage1_filters(config, params64[0]["encoder"])
        trained = network_responses(params64, test, config)
        random_responses = network_responses(init_params(config, seed=seed + 1000, dtype="float64"), test, config)
    else:
        from .tiled_network import TiledNetwork

        random_network = TiledNetwork(config, network.grid, network.executor.client, seed=seed + 1000,
                                      device=network.device)  # init_params' weights for that seed, made on the workers
        trained, random_responses = (tiled_responses(n, test) for n in (network, random_network))
        params64, filters = None, stage1_filters(config, network.weights(stage=0))
    evaluations = {
        "trained": evaluate("trained network", trained, labels),
        "random_net": evaluate("same network, random weights", random_responses, labels),
        "random_filters": evaluate("best of random linear filters", random_filter_responses(test, trained.shape[0], seed), labels),
    }
    if "templates" in group:
        evaluations["mean_face"] = evaluate(
            "mean-face template (uses labels)", template_responses(group["templates/mean_face"][:], test), labels
        )
    guess = guessing(labels)
    say("[4/4] pictures and report")
    pictures = _pictures(out, config, params64, filters, trained, labels, raw, evaluations["trained"], test)
    best = evaluations["trained"]
    template = evaluations.get("mean_face")
    report = {
        "best_accuracy": best.held_out["best_accuracy"],
        "best_accuracy_std": best.held_out["best_accuracy_std"],
        "random_net_accuracy": evaluations["random_net"].held_out["best_accuracy"],
        "random_filters_accuracy": evaluations["random_filters"].held_out["best_accuracy"],
        "mean_face_accuracy": None if template is None else template.held_out["best_accuracy"],
        "guess_accuracy": guess,
        "auc": best.held_out["auc"],
        "random_net_auc": evaluations["random_net"].held_out["auc"],
        "n_faces": int(labels.sum()),
        "n_distractors": int((~labels).sum()),
        "face_fraction": attrs["face_fraction"],
        "le2012_protocol": {
            "best_accuracy": best.le2012["best_accuracy"],
            "random_net_accuracy": evaluations["random_net"].le2012["best_accuracy"],
            "random_filters_accuracy": evaluations["random_filters"].le2012["best_accuracy"],
            "mean_face_accuracy": None if template is None else template.le2012["best_accuracy"],
            "guess_accuracy": guess,
            "auc": best.le2012["auc"],
            "best_neuron": best.le2012["neuron"],
        },
        "details": {name: _protocols(e) for name, e in evaluations.items()},
        "config": config.name,
        **training,
        "train_frames": attrs["train_frames"],
        "pictures": pictures,
        "seconds": time.perf_counter() - started,
    }
    (out / "report.json").write_text(json.dumps(report, indent=1))
    (out / "report.md").write_text(_markdown(report, attrs, evaluations))
    return report


def tiled_responses(network, frames, batch: int = 64) -> numpy.ndarray:
    """Every top-layer neuron's response to every frame, ``(neurons, N)``, computed by ``network``'s tiles on their
    workers (:meth:`~dasksae.tiled_network.TiledNetwork.features`) a batch of frames at a time."""
    parts = []
    for start in range(0, frames.shape[-1], batch):
        top = network.features(numpy.ascontiguousarray(frames[..., start:start + batch], dtype=network.dtype))
        parts.append(numpy.asarray(top, dtype=numpy.float64).reshape(-1, top.shape[-1]))
    return numpy.concatenate(parts, axis=1)


def stage1_filters(config, encoder, count: int = 64) -> numpy.ndarray:
    """``count`` of stage 1's unit-norm filters, evenly spread over its neurons, as ``(count, field, field, C)``;
    ``encoder`` may be a Dask array chunked by tile (:meth:`~dasksae.tiled_network.TiledNetwork.weights`): each row
    is then cut out on its tile's worker, and only those rows travel."""
    import dask

    stage, channels = config.stages[0], config.input_shape[2]
    shape = encoder.shape
    chosen = numpy.linspace(0, int(numpy.prod(shape[:-1])) - 1, count).astype(int)
    rows = dask.compute(*[encoder[tuple(int(i) for i in numpy.unravel_index(flat, shape[:-1]))] for flat in chosen])
    rows = numpy.stack([numpy.asarray(row, dtype=numpy.float64) for row in rows])
    rows /= numpy.maximum(numpy.linalg.norm(rows, axis=1, keepdims=True), 1e-30)
    return rows.reshape(count, stage.field, stage.field, channels)


def _pictures(out, config, params, filters, responses, labels, raw, evaluation, test) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .neurons import most_selective, optimal_stimulus

    folder = out / "pictures"
    folder.mkdir(exist_ok=True)
    neuron = evaluation.le2012["neuron"]
    paths = {}

    figure, axis = plt.subplots(figsize=(5, 3.2))
    r = responses[neuron]
    bins = numpy.linspace(r.min(), r.max(), 25)
    axis.hist(r[~labels], bins=bins, alpha=0.6, label=f"distractors ({(~labels).sum()})")
    axis.hist(r[labels], bins=bins, alpha=0.6, label=f"faces ({labels.sum()})")
    axis.axvline(evaluation.le2012["threshold"], color="k", linestyle="--", linewidth=1, label="threshold")
    axis.set_xlabel(f"response of neuron {neuron}")
    axis.set_ylabel("test images")
    axis.legend(fontsize=8)
    figure.tight_layout()
    paths["histogram"] = str(folder / "best-neuron-histogram.png")
    figure.savefig(paths["histogram"], dpi=120)
    plt.close(figure)

    if params is not None:  # the optimal stimuli need this process's reference network
        norm = float(numpy.sqrt((test**2).sum(axis=(0, 1, 2))).mean())
        stimulus, _ = optimal_stimulus(params, config, neuron, norm, steps=60)
        figure, axis = plt.subplots(figsize=(2.6, 2.6))
        axis.imshow(stimulus[:, :, 0] if stimulus.shape[2] == 1 else _unit(stimulus), cmap="gray")
        axis.set_axis_off()
        axis.set_title(f"optimal stimulus, neuron {neuron}", fontsize=8)
        paths["optimal_stimulus"] = str(folder / "optimal-stimulus.png")
        figure.savefig(paths["optimal_stimulus"], dpi=120, bbox_inches="tight")
        plt.close(figure)

        chosen, aucs = most_selective(responses, labels, 16)
        figure, axes = plt.subplots(2, 8, figsize=(8, 2.6))
        for axis, index, auc in zip(axes.ravel(), chosen, aucs):
            image, _ = optimal_stimulus(params, config, int(index), norm, steps=60)
            axis.imshow(image[:, :, 0] if image.shape[2] == 1 else _unit(image), cmap="gray")
            axis.set_title(f"{index}: AUC {auc:.2f}", fontsize=6)
            axis.set_axis_off()
        figure.suptitle("optimal stimuli of the 16 neurons that best rank faces first (AUC on the whole test set)",
                        fontsize=8)
        paths["selective_stimuli"] = str(folder / "selective-stimuli.png")
        figure.savefig(paths["selective_stimuli"], dpi=120, bbox_inches="tight")
        plt.close(figure)

    top = numpy.argsort(-r)[:16]
    figure, axes = plt.subplots(2, 8, figsize=(8, 2.3))
    for axis, index in zip(axes.ravel(), top):
        image = raw[:, :, :, index]
        axis.imshow(image[:, :, 0] if image.shape[2] == 1 else image, cmap="gray", vmin=0, vmax=1)
        axis.set_title("face" if labels[index] else "other", fontsize=7)
        axis.set_axis_off()
    figure.suptitle(f"top 16 test images for neuron {neuron}", fontsize=9)
    paths["top_images"] = str(folder / "top-images.png")
    figure.savefig(paths["top_images"], dpi=120, bbox_inches="tight")
    plt.close(figure)

    channels = config.input_shape[2]
    figure, axes = plt.subplots(8, 8, figsize=(5, 5))
    for axis, f in zip(axes.ravel(), filters):
        axis.imshow(f[:, :, 0] if channels == 1 else _unit(f), cmap="gray")
        axis.set_axis_off()
    figure.suptitle("stage-1 filters (64 of the network's)", fontsize=9)
    paths["filters"] = str(folder / "stage1-filters.png")
    figure.savefig(paths["filters"], dpi=120, bbox_inches="tight")
    plt.close(figure)
    return {name: str(Path(p).relative_to(out)) for name, p in paths.items()}


def _training_line(report) -> str:
    if report.get("loss_window") is None:
        return f"{report['config']}, checkpoint {report.get('checkpoint', '?')} (step {report.get('step', '?')}), trained without labels."
    return (
        f"{report['config']} trained without labels for {report['steps']} steps (minibatch {report['minibatch']}, lr {report['lr']}) "
        f"on {report['tiles']} tiles over {report['workers']} local workers ({report['device']}); "
        f"mean loss of the first {report['loss_window']} steps {report['first_mean_loss']:.4g} -> of the last "
        f"{report['loss_window']} {report['last_mean_loss']:.4g} (as the training log prints it)."
    )


def _mean_losses(records) -> dict:
    """The training log's summary of the losses (:func:`dasksae.train.loss_trend`), for the report."""
    from .train import loss_trend

    if not records:
        return {}
    window, first, last = loss_trend([record["loss"] for record in records])
    return {"loss_window": window, "first_mean_loss": first, "last_mean_loss": last}


def _unit(image):
    low, high = image.min(), image.max()
    return (image - low) / max(high - low, 1e-12)


def _markdown(report, attrs, evaluations) -> str:
    rows = []
    for key, evaluation in evaluations.items():
        rows.append(
            f"| {evaluation.name} | {evaluation.neurons} | {evaluation.le2012['best_accuracy']:.1%} | "
            f"{evaluation.held_out['best_accuracy']:.1%} ± {evaluation.held_out['best_accuracy_std']:.1%} | "
            f"{evaluation.held_out['auc']:.3f} ± {evaluation.held_out['auc_std']:.3f} |"
        )
    rows.append(f"| guessing (all 'not a face') | - | {report['guess_accuracy']:.1%} | {report['guess_accuracy']:.1%} | 0.5 |")
    pictures = report["pictures"]
    return f"""# dasksae demo: is there a face neuron?

{_training_line(report)}
{report['seconds']:.0f} s in all.{' Quick run: too short to learn much.' if report.get('quick') else ''}

## Data

* Training pool: {attrs['train_frames']} frames of {'x'.join(map(str, attrs['input_shape']))}: crops of the scikit-image stills
  at random positions and scales, and {attrs['train_face_frames']} faces ({attrs['face_fraction']:.1%} of the pool) from
  the training half of `skimage.data.lfw_subset()`, flipped, shifted and scaled. No labels are used in training.
* Test set, kept apart: {report['n_faces']} faces (the other half of lfw_subset) and {report['n_distractors']} distractors
  (lfw_subset's non-faces and crops of stills that show no person and are not in the training pool),
  {report['n_faces'] / (report['n_faces'] + report['n_distractors']):.0%} faces.
* Every frame contrast normalised and whitened the same way ({attrs['preprocessing']['whitening']}).

## Results

Le 2012's protocol chooses the neuron and threshold on the whole test set and is optimistic; the held-out protocol
chooses them on a random stratified half and measures the other half (mean ± std over 10 splits).

| responses | neurons | best accuracy, Le 2012 protocol | best accuracy, held out | ROC AUC, held out |
|---|---:|---:|---:|---:|
{chr(10).join(rows)}

The seed's figures, for scale: Coates et al. 2013, faces 88.2% against 64.8% for a random net and 64.7% for guessing;
Le et al. 2012, 81.7%.

## Pictures

{_picture_lines(pictures)}
"""


def _picture_lines(pictures: dict) -> str:
    titles = {"histogram": "responses of the best neuron", "optimal_stimulus": "optimal stimulus",
              "top_images": "top test images", "selective_stimuli": "optimal stimuli of the most face-selective neurons",
              "filters": "stage-1 filters"}
    lines = [f"![{title}]({pictures[name]})" for name, title in titles.items() if name in pictures]
    if "optimal_stimulus" not in pictures:
        lines.append("(No optimal stimuli: the responses were computed on the cluster, and the stimuli need the input "
                     "gradient of the reference network in this process.)")
    return "\n".join(lines)
