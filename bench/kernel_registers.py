"""Registers, spills and shared memory of our float32 GEMM kernels for the H100/H200 (sm_90), without a GPU.

    pip install nvidia-cuda-nvrtc-cu12 nvidia-cuda-nvcc-cu12
    python bench/kernel_registers.py
    DASKSAE_UPDATE_STAGING=1 python bench/kernel_registers.py --ptx simt.ptx   # a switch's variant; keep its PTX
    python bench/kernel_registers.py --kernels mma   # the bfloat16 tensor-core update (kernels/mma_update.py)
    python bench/kernel_registers.py --kernels mma --mma-epilogue fragments   # one of its epilogue's variants
    python bench/kernel_registers.py --kernels mma --mma-epilogue rows-wide-wgmma --split-master   # on split weights
    python bench/kernel_registers.py --kernels mma-forward   # the bfloat16 tensor-core W x (kernels/mma_forward.py)
    python bench/kernel_registers.py --kernels mma-transpose   # W^T y with the fold (kernels/mma_transpose.py)
    python bench/kernel_registers.py --kernels mma-transpose --transpose-variant k64x3
    python bench/kernel_registers.py --kernels mma-forward --forward-variant w64x3-swizzled   # on wgmma (sm_90a)
    python bench/kernel_registers.py --kernels mma-transpose --transpose-variant w64x3-swizzled
    python bench/kernel_registers.py --kernels mma-transpose --transpose-variant w64x3-swizzled --transpose-geometry \
        128,8,20,4 --sass   # with a layer's geometry compiled in, as the training runs it (coates200's stages 2, 3)
    python bench/kernel_registers.py --kernels mma-float32   # float32 W x on TF32 tensor cores (kernels/mma_float32.py)
    python bench/kernel_registers.py --kernels mma-float32 --float32-variant w32-split-2   # its W x on wgmma (sm_90a)
    python bench/kernel_registers.py --kernels mma-float32-transpose   # and its W^T y with the fold
    python bench/kernel_registers.py --kernels mma-float32-transpose --float32-variant w32-split-2   # on wgmma
    python bench/kernel_registers.py --kernels mma-float32-update --mma-epilogue rows   # and its update
    python bench/kernel_registers.py --kernels mma-float32-update --mma-epilogue rows-wide-wgmma   # on wgmma (sm_90a)
    pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm   # for --sass
    python bench/kernel_registers.py --kernels mma-float32 --terms 1 --sass   # and the instructions of its tile loop

Compiles :mod:`dasksae.kernels.simt_gemm`'s source to PTX with NVRTC (as
``tests/test_cuda_sources.py`` does) and assembles it with ``ptxas -v``,
printing one line a kernel.  Two blocks of 256 threads an SM need at most
128 registers a thread and no spills.  With ``--sass``, also the machine code
(``cuobjdump -sass``) of the tile loop's body, the instructions from the
barrier before the kernel's first tensor-core product (HMMA) to the barrier or
branch after its last, counted by opcode: how many instructions the
products take to issue (an SM issues four a clock; session 40); on ``wgmma``
(HGMMA) the whole loop around the products, which also stages the next
k-tile (session 50).
"""

from __future__ import annotations

import ctypes
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))


def _geometry(text: str) -> tuple[int, int, int, int]:
    """``ROWS,CHANNELS,FIELD,STEP`` as four whole numbers, or a clear error."""
    import argparse

    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4 or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not ROWS,CHANNELS,FIELD,STEP (four positive whole numbers)")
    return values


def main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ptx", help="also write the PTX to this file")
    parser.add_argument("--kernels", choices=("simt", "mma", "mma-forward", "mma-transpose", "mma-float32",
                                                     "mma-float32-transpose", "mma-float32-update"),
                        default="simt",
                        help="simt: kernels/simt_gemm.py (float32); mma: kernels/mma_update.py (bfloat16, tensor cores); "
                             "mma-forward: kernels/mma_forward.py; mma-transpose: kernels/mma_transpose.py; "
                             "mma-float32(-transpose, -update): kernels/mma_float32.py (split TF32)")
    parser.add_argument("--mma-epilogue", default="rows",
                        help="with --kernels mma (mma-float32-update): the epilogue's variant "
                             "(mma_update.EPILOGUE_VARIANTS; SPLIT_VARIANTS)")
    parser.add_argument("--forward-variant", default="k32x4",
                        help="with --kernels mma-forward: the tiles' variant (mma_forward.VARIANTS, or WGMMA_VARIANTS: "
                             "wgmma, assembled for sm_90a)")
    parser.add_argument("--transpose-variant", default="k32x4",
                        help="with --kernels mma-transpose: the tiles' variant (mma_transpose.VARIANTS, or "
                             "WGMMA_VARIANTS: wgmma, assembled for sm_90a)")
    parser.add_argument("--transpose-geometry", type=_geometry, default=None,
                        help="with --kernels mma-transpose: ROWS,CHANNELS,FIELD,STEP of a layer compiled in "
                             "(LAYER_GEOMETRY, as DASKSAE_MMA_GEOMETRY=1 compiles each layer's; default: none)")
    parser.add_argument("--float32-variant", default="k32x3",
                        help="with --kernels mma-float32(-transpose): the tiles' variant (mma_forward.SPLIT_VARIANTS, "
                             "mma_transpose.SPLIT_VARIANTS)")
    parser.add_argument("--terms", type=int, default=3, choices=(1, 3),
                        help="with --kernels mma-float32(-transpose, -update): TF32 products a k-step (3: the split, "
                             "float32; 1: plain TF32, --dtype tf32 with DASKSAE_TF32_TENSOR_CORES=1)")
    parser.add_argument("--split-master", action="store_true",
                        help="(mma) the update on split master weights (dasksae.master_weights)")
    parser.add_argument("--sass", action="store_true",
                        help="also count the instructions of the tile loop's body in the machine code (needs "
                             "nvidia-cuda-cuobjdump and nvidia-cuda-nvdisasm)")
    args = parser.parse_args(argv)
    from dasksae.kernels import mma_float32, mma_forward, mma_transpose, mma_update, simt_gemm

    if args.kernels == "simt":
        source, names, standard = simt_gemm.simt_gemm_source(), simt_gemm.SIMT_GEMM_KERNELS, b"-std=c++14"
    elif args.kernels == "mma":
        source, names, standard = (mma_update.mma_update_source(args.mma_epilogue, split_master=args.split_master), [],
                                   b"-std=c++17")
    elif args.kernels == "mma-forward":
        source, names, standard = mma_forward.mma_forward_source(args.forward_variant), [], b"-std=c++17"
    elif args.kernels == "mma-float32":
        source, names, standard = mma_float32.mma_float32_source(args.float32_variant, args.terms), [], b"-std=c++17"
    elif args.kernels == "mma-float32-update":
        source, names, standard = (mma_float32.mma_float32_update_source(args.mma_epilogue, args.terms), [],
                                    b"-std=c++17")
    elif args.kernels == "mma-float32-transpose":
        source, names, standard = (mma_float32.mma_float32_transpose_source(args.float32_variant, args.terms), [],
                                    b"-std=c++17")
    else:
        source, names, standard = (mma_transpose.mma_transpose_source(args.transpose_variant, args.transpose_geometry),
                                   [], b"-std=c++17")
    on_wgmma = (args.kernels == "mma-forward" and args.forward_variant in mma_forward.WGMMA_VARIANTS
                or args.kernels == "mma-float32" and args.float32_variant in mma_forward.SPLIT_WGMMA_VARIANTS
                or args.kernels == "mma-float32-transpose"
                and args.float32_variant in mma_transpose.SPLIT_WGMMA_VARIANTS
                or args.kernels == "mma-transpose" and args.transpose_variant in mma_transpose.WGMMA_VARIANTS
                or args.kernels in ("mma", "mma-float32-update")
                and mma_update.EPILOGUE_VARIANTS[args.mma_epilogue].get("WGMMA"))
    log, sass = assembled(source, standard, architecture="90a" if on_wgmma else "90", names=names, ptx_path=args.ptx,
                          sass=args.sass)
    print("\n".join(register_lines(log)))
    if sass is not None:
        print(tile_loop_counts(sass))


def assembled(source: str, standard: bytes, architecture: str = "90", names=(), ptx_path: str | None = None,
              sass: bool = False) -> tuple[str, str | None]:
    """``source`` compiled to PTX by NVRTC (the nvidia-cuda-nvrtc wheel) for ``compute_<architecture>`` and
    assembled by ``ptxas -v`` (the nvidia-cuda-nvcc wheel) for ``sm_<architecture>``: ptxas's log, and with ``sass``
    the machine code (:func:`disassembled`); the PTX also written to ``ptx_path`` where given.  NVRTC's log is
    raised where the source does not compile, ptxas's where it does not assemble."""
    import nvidia.cuda_nvcc
    from test_cuda_sources import NVRTC

    if NVRTC is None:
        raise SystemExit("NVRTC is not installed: pip install nvidia-cuda-nvrtc-cu12")
    program = ctypes.c_void_p()
    assert NVRTC.nvrtcCreateProgram(ctypes.byref(program), source.encode(), b"kernel.cu", 0, None, None) == 0
    for name in names:
        NVRTC.nvrtcAddNameExpression(program, name.encode())
    options = [f"--gpu-architecture=compute_{architecture}".encode(), standard]
    size = ctypes.c_size_t()
    if NVRTC.nvrtcCompileProgram(program, len(options), (ctypes.c_char_p * len(options))(*options)):
        NVRTC.nvrtcGetProgramLogSize(program, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        NVRTC.nvrtcGetProgramLog(program, log)
        raise SystemExit("the source does not compile:\n" + log.value.decode())
    NVRTC.nvrtcGetPTXSize(program, ctypes.byref(size))
    ptx = ctypes.create_string_buffer(size.value)
    NVRTC.nvrtcGetPTX(program, ptx)
    if ptx_path:
        with open(ptx_path, "wb") as file:
            file.write(ptx.value)
    ptxas = os.path.join(list(nvidia.cuda_nvcc.__path__)[0], "bin", "ptxas")
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "kernel.ptx")
        with open(path, "wb") as file:
            file.write(ptx.value)
        run = subprocess.run([ptxas, f"-arch=sm_{architecture}", "-v", path, "-o",
                              os.path.join(folder, "kernel.cubin")], capture_output=True, text=True)
        if run.returncode:
            raise SystemExit("ptxas refused the source:\n" + run.stderr)
        return run.stderr, disassembled(os.path.join(folder, "kernel.cubin")) if sass else None


def register_lines(log: str) -> list[str]:
    """One line a kernel from ptxas's ``-v`` log: its registers, spills, stack and static shared memory."""
    lines, kernel = [], None
    for line in log.splitlines():
        found = re.search(r"Compiling entry function '([^']+)'", line)
        if found:
            kernel = found.group(1)
        spills = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if spills:
            stack, spill_stores = int(spills.group(1)), int(spills.group(2))
        used = re.search(r"Used (\d+) registers(?:.*?(\d+) bytes smem)?", line)
        if used:  # (no smem figure where a kernel's shared memory is all dynamic)
            lines.append(f"{kernel:<70} {used.group(1):>4} registers, {spill_stores} bytes spilled, {stack} bytes of "
                         f"stack, {used.group(2) or 0} bytes static shared")
    return lines


def disassembled(cubin: str) -> str:
    """``cuobjdump -sass`` of ``cubin``, from the nvidia-cuda-cuobjdump and nvidia-cuda-nvdisasm wheels' binaries."""
    import importlib.util

    folders = []
    for package in ("nvidia.cu13", "nvidia.cuda_cuobjdump", "nvidia.cuda_nvdisasm"):
        try:
            spec = importlib.util.find_spec(package)
        except ModuleNotFoundError:
            spec = None
        folders += [os.path.join(path, "bin") for path in (spec.submodule_search_locations or [])] if spec else []
    environment = dict(os.environ, PATH=os.pathsep.join(folders + [os.environ.get("PATH", "")]))
    try:
        return subprocess.run(["cuobjdump", "-sass", cubin], capture_output=True, text=True, check=True,
                              env=environment).stdout
    except (OSError, subprocess.CalledProcessError):
        raise SystemExit("--sass needs cuobjdump and nvdisasm: pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm")


def tile_loop_counts(sass: str) -> str:
    """The instructions of the tile loop's body in ``sass`` (a kernel's), in all and by opcode (predicates dropped),
    and per tensor-core product: on ``mma.sync`` (HMMA) from the last barrier before its first HMMA to the first
    barrier or branch after its last; on ``wgmma`` (HGMMA, whose loops also stage the next k-tile) the whole loop,
    from the target of the branch back over the first HGMMA to that branch."""
    from collections import Counter

    listed = [(int(found.group(1), 16), found.group(2).strip())
              for found in re.finditer(r"/\*([0-9a-f]{4,})\*/\s+([^;]*);", sass)]
    instructions = [text for _, text in listed]
    products = [i for i, text in enumerate(instructions) if "HMMA" in text]
    name = "HMMA"
    if products:
        start = max([i for i in range(products[0]) if "BAR" in instructions[i]], default=0)
        end = min([i for i in range(products[-1], len(instructions))
                   if "BAR" in instructions[i] or "BRA" in instructions[i]], default=len(instructions) - 1)
    else:
        products, name = [i for i, text in enumerate(instructions) if "HGMMA" in text], "HGMMA"
        if not products:
            return "  no tensor-core products (HMMA, HGMMA) in the machine code"
        first = listed[products[0]][0]
        loops = [(i, int(found.group(1), 16)) for i, (address, text) in enumerate(listed)
                 for found in [re.search(r"BRA\s+(0x[0-9a-f]+)", text)]
                 if found and int(found.group(1), 16) <= first < address]
        if not loops:
            return "  no loop around the tensor-core products (HGMMA) in the machine code"
        end, target = min(loops)  # the innermost: the first branch back over them
        start = next(i for i, (address, _) in enumerate(listed) if address >= target)
        products = [i for i in products if start <= i <= end]
    body = instructions[start:end + 1]
    opcodes = Counter(text.split()[1] if text.startswith("@") else text.split()[0] for text in body)
    return (f"  tile loop: {len(body)} instructions, {len(products)} {name}, {len(body) / len(products):.1f} an "
            f"{name}: " + ", ".join(f"{opcode} {count}" for opcode, count in opcodes.most_common(12)))


if __name__ == "__main__":
    main()
