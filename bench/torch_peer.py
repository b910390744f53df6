"""The peer: the same network and objective as a single-process PyTorch program, written as a capable user would.

Batch-first ``(M, C, H, W)`` tensors; each stage's locally connected layer is
``F.unfold`` + one batched product over the filter blocks (``einsum``, which
PyTorch lowers to ``bmm``) + ``F.fold`` for the tied decoder, autograd for every
gradient, and ``torch.optim.SGD`` with momentum.  L2 pooling is ``avg_pool2d``
of the squares, LCN two ``conv2d`` with the separable Gaussian and the same
border-aware normalisation as :mod:`dasksae.kernels.contrast`.  Precision:
``float32`` (TF32 off), ``tf32`` (TF32 matmuls) and ``bfloat16`` (autocast,
float32 master weights); optionally ``torch.compile``.

The weights are :func:`dasksae.reference.init_params` reordered from
``(R, f, f, C)`` to unfold's ``(R, C, f, f)``, so its loss can be checked
against the dasksae reference on the same batch (``check_against_reference``).
"""

from __future__ import annotations

import numpy


def _gaussian(size):
    from dasksae.kernels.contrast import gaussian_window

    return numpy.asarray(gaussian_window(size), dtype=numpy.float64)


class TorchNetwork:
    """Parameters and the joint objective of one network, in PyTorch."""

    def __init__(self, config, params, device="cuda"):
        import torch

        self.config = config
        self.device = device
        self.stages = []
        self.parameters = []
        for stage, geometry, entry in zip(config.stages, config.geometry(), params):
            blocks_h, blocks_w, rows, fan_in = geometry.weight_shape
            channels = geometry.input_shape[2]
            weights = numpy.asarray(entry["encoder"], dtype=numpy.float32).reshape(
                blocks_h * blocks_w, rows, stage.field, stage.field, channels
            ).transpose(0, 1, 4, 2, 3).reshape(blocks_h * blocks_w, rows, fan_in)
            encoder = torch.nn.Parameter(torch.tensor(numpy.ascontiguousarray(weights), device=device))
            scale = torch.nn.Parameter(torch.tensor(float(entry["scale"]), device=device))
            window = torch.tensor(_gaussian(stage.lcn_size), dtype=torch.float32, device=device)
            self.stages.append({"stage": stage, "geometry": geometry, "encoder": encoder, "scale": scale, "window": window})
            self.parameters.append((encoder, scale, geometry))

    def optimizer(self, lr, momentum):
        import torch

        groups = []
        for encoder, scale, geometry in self.parameters:
            height, width, maps = geometry.filter_shape
            groups.append({"params": [encoder], "lr": lr})
            groups.append({"params": [scale], "lr": lr / (height * width * maps)})
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)

    def _smooth(self, plane, window):
        """Separable zero-padded 'same' Gaussian filtering of ``plane (M, 1, H, W)``."""
        import torch.nn.functional as F

        size = window.shape[0]
        plane = F.conv2d(plane, window.view(1, 1, size, 1).to(plane.dtype), padding=(size // 2, 0))
        return F.conv2d(plane, window.view(1, 1, 1, size).to(plane.dtype), padding=(0, size // 2))

    def _lcn(self, x, window, c):
        import torch

        maps = x.shape[1]
        ones = torch.ones((1, 1) + tuple(x.shape[2:]), dtype=x.dtype, device=x.device)
        coverage = self._smooth(ones, window)
        mean = self._smooth(x.sum(dim=1, keepdim=True), window) / maps / coverage
        centred = x - mean
        sigma = torch.sqrt(self._smooth((centred * centred).sum(dim=1, keepdim=True), window) / maps / coverage)
        return centred / torch.clamp(sigma, min=c)

    def loss(self, x):
        """The joint objective (sum of every stage's) of a batch ``x (M, C, H, W)``, averaged over M."""
        import torch
        import torch.nn.functional as F

        config = self.config
        batch = x.shape[0]
        total = 0.0
        for entry in self.stages:
            stage, geometry = entry["stage"], entry["geometry"]
            blocks_h, blocks_w, rows, fan_in = geometry.weight_shape
            height, width, channels = geometry.input_shape
            maps = geometry.filter_shape[2]
            encoder, a = entry["encoder"], entry["scale"]
            weights = encoder / encoder.norm(dim=-1, keepdim=True)
            patches = F.unfold(x, stage.field, stride=stage.step)  # (M, F, L)
            code_blocks = torch.einsum("lrf,mfl->mlr", weights.to(patches.dtype), patches)  # (M, L, R)
            z = (
                code_blocks.reshape(batch, blocks_h, blocks_w, stage.block[0], stage.block[1], maps)
                .permute(0, 5, 1, 3, 2, 4)
                .reshape(batch, maps, blocks_h * stage.block[0], blocks_w * stage.block[1])
            )
            recon_patches = torch.einsum("lrf,mlr->mfl", weights.to(patches.dtype), a * code_blocks)
            reconstruction = F.fold(recon_patches, (height, width), stage.field, stride=stage.step)
            error = reconstruction - x
            squares = F.avg_pool2d(z * z, stage.pool_size, stride=stage.pool_stride) * (stage.pool_size**2)
            total = total + (error.float() * error.float()).sum() / batch
            total = total + config.sparsity * torch.sqrt(config.epsilon + a * a * squares.float()).sum() / batch
            pooled = torch.sqrt(config.epsilon + squares)
            x = self._lcn(pooled, entry["window"], config.lcn_c)
        return total


def make_step(network, lr, momentum, precision="float32", compile=False):
    """A function ``step(x)`` doing one SGD update; returns the loss tensor."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    torch.backends.cudnn.allow_tf32 = precision == "tf32"
    optimizer = network.optimizer(lr, momentum)
    # the shapes never change within a run: compiled for them (dynamo's automatic dynamic shapes, after a second
    # network's recompile of the same code, failed in Inductor on the CPU: bench/results/session24/compile-cpu)
    loss_fn = torch.compile(network.loss, dynamic=False) if compile else network.loss

    def step(x):
        optimizer.zero_grad(set_to_none=True)
        if precision == "bfloat16":
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = loss_fn(x)
        else:
            loss = loss_fn(x)
        loss.backward()
        optimizer.step()
        return loss

    return step


def to_torch_batch(x, device="cuda"):
    """dasksae's ``(H, W, C, M)`` batch as PyTorch's ``(M, C, H, W)``."""
    import torch

    return torch.tensor(numpy.ascontiguousarray(numpy.asarray(x).transpose(3, 2, 0, 1)), device=device)


def check_against_reference(config, batch, device="cuda") -> tuple[float, float]:
    """(peer loss, dasksae reference loss) of the same parameters and batch, in float32."""
    from dasksae.reference import init_params, loss_and_grads

    params = init_params(config, seed=0, dtype="float32")
    peer = TorchNetwork(config, params, device)
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    with torch.no_grad():
        mine = float(peer.loss(to_torch_batch(batch, device)))
    return mine, loss_and_grads(params, batch.astype("float32"), config).loss
