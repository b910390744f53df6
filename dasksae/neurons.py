"""Object-selective neurons: which top-layer neuron best tells faces from distractors, measured two ways.

Le et al. 2012's protocol: every neuron's response to every test image; for
each neuron, 20 evenly spaced thresholds between its minimum and maximum
response ("face" when the response is at least the threshold); the best
accuracy over neurons and thresholds.  Choosing the best of thousands of
neurons and thresholds on the same few hundred images flatters any network, so
this protocol is reported as optimistic, next to a held-out one: neuron and
threshold chosen on a random stratified half of the test set, accuracy and
ROC AUC measured on the other half, mean and standard deviation over 10
splits.  Baselines under both: guessing (all negative), the same network with
random weights, the best of as many random linear filters on the pixels, and
a mean-face template (an upper reference: it is built from labelled faces).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy

THRESHOLDS = 20


def _accuracies(responses: numpy.ndarray, labels: numpy.ndarray, thresholds: numpy.ndarray) -> numpy.ndarray:
    """Accuracy of every (neuron, threshold): ``responses (n, N)``, ``thresholds (n, T)`` -> ``(n, T)``."""
    labels = labels.astype(bool)
    out = numpy.empty(thresholds.shape)
    for start in range(0, responses.shape[0], 4096):
        r = responses[start : start + 4096, None, :]
        predicted = r >= thresholds[start : start + 4096, :, None]
        out[start : start + 4096] = (predicted == labels[None, None, :]).mean(axis=2)
    return out


def thresholds_of(responses: numpy.ndarray) -> numpy.ndarray:
    """20 evenly spaced thresholds between each neuron's minimum and maximum response."""
    low, high = responses.min(axis=1), responses.max(axis=1)
    return low[:, None] + (high - low)[:, None] * numpy.linspace(0.0, 1.0, THRESHOLDS)[None, :]


def roc_auc(scores: numpy.ndarray, labels: numpy.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties counted half)."""
    labels = labels.astype(bool)
    positives, negatives = scores[labels], scores[~labels]
    if len(positives) == 0 or len(negatives) == 0:
        return float("nan")
    greater = (positives[:, None] > negatives[None, :]).sum()
    ties = (positives[:, None] == negatives[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(positives) * len(negatives)))


def most_selective(responses: numpy.ndarray, labels: numpy.ndarray, count: int) -> tuple[numpy.ndarray, numpy.ndarray]:
    """The ``count`` neurons whose responses best rank faces above distractors (ROC AUC over the whole test set,
    highest first; chosen on the images they are scored on, so optimistic, as Le 2012's protocol): their indices and
    AUCs."""
    aucs = numpy.array([roc_auc(r, labels) for r in responses])
    chosen = numpy.argsort(-aucs, kind="stable")[:count]
    return chosen, aucs[chosen]


def le2012_protocol(responses: numpy.ndarray, labels: numpy.ndarray) -> dict:
    """Best neuron and threshold chosen on the whole test set (optimistic)."""
    thresholds = thresholds_of(responses)
    accuracy = _accuracies(responses, labels, thresholds)
    neuron, which = numpy.unravel_index(int(numpy.argmax(accuracy)), accuracy.shape)
    return {
        "best_accuracy": float(accuracy[neuron, which]),
        "neuron": int(neuron),
        "threshold": float(thresholds[neuron, which]),
        "auc": roc_auc(responses[neuron], labels),
    }


def held_out_protocol(responses: numpy.ndarray, labels: numpy.ndarray, splits: int = 10, seed: int = 0) -> dict:
    """Neuron and threshold chosen on a stratified half, accuracy and AUC on the other: mean and std over splits."""
    rng = numpy.random.default_rng(seed)
    labels = labels.astype(bool)
    positives, negatives = numpy.flatnonzero(labels), numpy.flatnonzero(~labels)
    accuracies, aucs, neurons = [], [], []
    for _ in range(splits):
        pos, neg = rng.permutation(positives), rng.permutation(negatives)
        choose = numpy.concatenate([pos[: len(pos) // 2], neg[: len(neg) // 2]])
        measure = numpy.concatenate([pos[len(pos) // 2 :], neg[len(neg) // 2 :]])
        thresholds = thresholds_of(responses[:, choose])
        accuracy = _accuracies(responses[:, choose], labels[choose], thresholds)
        neuron, which = numpy.unravel_index(int(numpy.argmax(accuracy)), accuracy.shape)
        predicted = responses[neuron, measure] >= thresholds[neuron, which]
        accuracies.append(float((predicted == labels[measure]).mean()))
        aucs.append(roc_auc(responses[neuron, measure], labels[measure]))
        neurons.append(int(neuron))
    return {
        "best_accuracy": float(numpy.mean(accuracies)),
        "best_accuracy_std": float(numpy.std(accuracies)),
        "auc": float(numpy.nanmean(aucs)),
        "auc_std": float(numpy.nanstd(aucs)),
        "neurons_chosen": neurons,
    }


@dataclass
class Evaluation:
    """Both protocols for one set of responses."""

    name: str
    neurons: int
    le2012: dict
    held_out: dict


def evaluate(name: str, responses: numpy.ndarray, labels: numpy.ndarray, splits: int = 10, seed: int = 0) -> Evaluation:
    responses = numpy.asarray(responses, dtype=numpy.float64)
    return Evaluation(name, responses.shape[0], le2012_protocol(responses, labels), held_out_protocol(responses, labels, splits, seed))


def guessing(labels: numpy.ndarray) -> float:
    """Accuracy of answering 'not a face' to everything."""
    return float(1.0 - numpy.asarray(labels, dtype=bool).mean())


def network_responses(params, frames: numpy.ndarray, config) -> numpy.ndarray:
    """Every top-layer neuron's response to every frame: ``(neurons, N)`` from frames ``(H, W, C, N)``."""
    from .reference import features

    top = features(params, numpy.asarray(frames, dtype=params[0]["encoder"].dtype), config)
    return top.reshape(-1, top.shape[-1])


def random_filter_responses(frames: numpy.ndarray, count: int, seed: int = 0) -> numpy.ndarray:
    """Responses of ``count`` random Gaussian linear filters on the pixels (Le 2012's baseline)."""
    flat = numpy.asarray(frames, dtype=numpy.float64).reshape(-1, frames.shape[-1])
    filters = numpy.random.default_rng(seed).standard_normal((count, flat.shape[0]))
    return filters @ flat


def template_responses(template: numpy.ndarray, frames: numpy.ndarray) -> numpy.ndarray:
    """The mean-face template's response (a dot product) to every frame, as one 'neuron'."""
    flat = numpy.asarray(frames, dtype=numpy.float64).reshape(-1, frames.shape[-1])
    return (numpy.asarray(template, dtype=numpy.float64).reshape(1, -1) @ flat)


# ---------------------------------------------------------------- optimal stimulus


def input_gradient(params, x, config, neuron: int):
    """d(response of top neuron ``neuron``)/d(input) for one frame ``x (H, W, C, 1)``."""
    from .kernels.contrast import lcn_backward
    from .kernels.local_filter import local_filter_transpose
    from .kernels.pooling import l2_pool_backward
    from .reference import encode_stage

    caches, inputs = [], []
    for stage_params, stage in zip(params, config.stages):
        inputs.append(x)
        x, cache = encode_stage(x, stage_params, stage, config)
        caches.append(cache)
    grad = numpy.zeros_like(x)
    grad.reshape(-1)[neuron] = 1.0
    for k in range(len(config.stages) - 1, -1, -1):
        stage = config.stages[k]
        weights, _, z, _, pooled, lcn_cache = caches[k]
        grad_pooled = lcn_backward(grad, lcn_cache)
        grad_z = l2_pool_backward(grad_pooled, z, pooled, stage.pool_size, stage.pool_stride)
        grad = local_filter_transpose(grad_z, weights, inputs[k].shape, stage.field, stage.step, stage.block[0], stage.block[1])
    return grad, x.reshape(-1)[neuron]


def optimal_stimulus(params, config, neuron: int, norm: float, steps: int = 100, rate: float = 0.5, seed: int = 0):
    """The input of fixed norm that maximises one neuron's response: projected gradient ascent."""
    rng = numpy.random.default_rng(seed)
    x = rng.standard_normal(tuple(config.input_shape) + (1,))
    x *= norm / numpy.linalg.norm(x)
    response = None
    for _ in range(steps):
        grad, response = input_gradient(params, x, config, neuron)
        x = x + rate * norm * grad / max(numpy.linalg.norm(grad), 1e-12)
        x *= norm / numpy.linalg.norm(x)
    return x[..., 0], float(response)
