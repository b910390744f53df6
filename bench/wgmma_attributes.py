"""What the driver made of the tensor-core ``W x`` kernels: registers, local memory (spills) and shared memory of
``mma.sync``'s k64x3 (CuPy's RawKernel) and of ``wgmma``'s variants, loaded as PTX (the driver assembles it) and as
NVRTC's sm_90a machine code (``DASKSAE_WGMMA_TARGET``).  Session 42's run (``bench/results/session42/attributes``)
was of the unswizzled variants since taken out (``w64x3``, ``w64x3-touching``, at the commit in its command.txt);
it now reads :data:`~dasksae.kernels.mma_forward.WGMMA_VARIANTS`.  One line a kernel::

    python bench/wgmma_attributes.py            # on the GPU machine
"""

from __future__ import annotations


def main() -> None:
    from dasksae.kernels import mma_forward, wgmma

    geometry = (2048, 96, 1728, 288, 4, 16, 10000)  # a stage-2-like layer compiled in
    kernels = [("k64x3", mma_forward._kernel("k64x3", geometry))]
    for variant in mma_forward.WGMMA_VARIANTS:
        for target in ("ptx", "cubin"):
            module = wgmma.compiled_module(mma_forward.mma_forward_source(variant, geometry), "mma_forward", target)
            kernels.append((f"{variant} {target}", module.get_function("dasksae_wgmma_filter_forward")))
    print(f"{'kernel':<22} {'registers':>9} {'local bytes':>11} {'static shared':>13}")
    for name, kernel in kernels:
        attributes = kernel.attributes
        print(f"{name:<22} {attributes['num_regs']:>9} {attributes['local_size_bytes']:>11} "
              f"{attributes['shared_size_bytes']:>13}")


if __name__ == "__main__":
    main()
