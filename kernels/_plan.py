"""Launch planning shared by the Triton operators (``kernels/<op>.py``).

Every kernel launch sits inside an operator of namespace ``hands3c`` (``*_fwd_triton`` /
``*_bwd_triton``), defined in that operator's kernel file with :func:`operator`: a
``torch.library.triton_op`` with compiled Triton, so torch.compile sees through it (its fake
kernel comes from tracing the body), and an opaque ``custom_op`` with an explicit fake
kernel under TRITON_INTERPRET=1.  Their autograd is registered once per operator, for the
C++ and the Triton family alike, in ``handS3C/ops/<op>.py``.

Launch plan knobs, all passed to the operators as explicit integers (0 = automatic):

* ``tile`` (S): steps per register tile and checkpoint stride;
* ``chunk_tiles``: tiles per chunk (the sequence-parallel unit, see DESIGN.md);
* ``block_d``: channels per register tile (automatic: autotuned on a GPU);
* ``bwd_sub``: channel sub-blocks one backward program walks (shrinks the buffers of
  the channel reductions dB/dC).

:func:`scan_config` sets them for a ``with`` block (tests use small tiles and chunks to
exercise every boundary under the CPU interpreter).  ``poison=True`` makes every output
buffer start as NaN instead of uninitialised memory, so a missed store shows up.
"""
from __future__ import annotations

import contextlib
import os
from typing import Tuple

import torch
import triton
from torch import Tensor
from torch.library import triton_op, wrap_triton

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
if INTERPRET:
    # same results; scans ~15x faster, the tests ~10x (see kernels/_interpreter.py)
    from ._interpreter import vectorize_interpreter_scan

    vectorize_interpreter_scan()

CONFIG = {"tile": 0, "chunk_tiles": 0, "block_d": 0, "bwd_sub": 0, "poison": False}


@contextlib.contextmanager
def scan_config(**kwargs):
    """Temporarily override launch-plan knobs: tile, chunk_tiles, block_d, bwd_sub, poison."""
    unknown = set(kwargs) - set(CONFIG)
    if unknown:
        raise TypeError(f"scan_config: unknown knobs {sorted(unknown)}")
    saved = dict(CONFIG)
    CONFIG.update({k: (v if k == "poison" else int(v or 0)) for k, v in kwargs.items()})
    try:
        yield
    finally:
        CONFIG.clear()
        CONFIG.update(saved)


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def np2(n: int) -> int:
    return triton.next_power_of_2(max(int(n), 1))


def buffer(shape, dtype, device) -> Tensor:
    if CONFIG["poison"]:
        return torch.full(shape, float("nan"), dtype=dtype, device=device)
    return torch.empty(shape, dtype=dtype, device=device)


def tile_steps(L: int) -> int:
    """Steps per tile: 32 on a GPU (a (32, BD, NP) tile per scan fits registers for BD<=16)."""
    t = CONFIG["tile"] or (8 if INTERPRET else 32)
    return max(1, min(np2(t), np2(L)))


def sm_count(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 1


def plan_chunks(n_tiles: int, units: int, device: torch.device, chunk_tiles: int) -> Tuple[int, int]:
    """(tiles per chunk, number of chunks).

    Chunks only buy parallelism and cost an extra pass (pass 1 scans everything once
    more: ~+100% of the forward's exps, ~+30% of the backward's work) and, for the cross
    scan, the single-launch four-direction mode, so a GPU gets chunks only when the
    (batch x channel block) programs would not give every SM one; the interpreter (a CPU)
    gets one chunk.
    """
    if chunk_tiles > 0:
        tpc = min(chunk_tiles, n_tiles)
    elif device.type == "cuda":
        want = max(1, cdiv(sm_count(device), max(units, 1)))
        tpc = cdiv(n_tiles, min(n_tiles, want))
    else:
        tpc = n_tiles
    return tpc, cdiv(n_tiles, tpc)


# Forward kernels are autotuned over channel-block size and warps (key: problem sizes).
# A forward program keeps ~5 (S, BD, NP) float tiles live (decay, input, two scan outputs,
# C); configs whose tile exceeds 32 floats per thread (S*BD*NP > 1024*num_warps) would
# spill and are pruned before benchmarking.  Backward kernels take BD from the plan (the
# layout of their partial-sum buffers depends on it) and tune warps only.
FWD_CONFIGS = [
    triton.Config({"BD": 8}, num_warps=4),
    triton.Config({"BD": 4}, num_warps=4),
    triton.Config({"BD": 16}, num_warps=4),
    triton.Config({"BD": 16}, num_warps=8),
    triton.Config({"BD": 32}, num_warps=8),
]
# the backward programs sit at ptxas' 255-register ceiling; at 4 warps the cross-scan one
# spills ~50 B (kernels/_compile_check.py), at 8 warps none
BWD_CONFIGS = [triton.Config({}, num_warps=8), triton.Config({}, num_warps=4)]


def prune_fwd(configs, named_args, **kwargs):
    tile = kwargs.get("S", named_args.get("S", 32))
    np_ = kwargs.get("NP", named_args.get("NP", 16))
    keep = [c for c in configs if tile * c.kwargs["BD"] * np_ <= 1024 * c.num_warps]
    return keep or [min(configs, key=lambda c: c.kwargs["BD"])]


def autotuned(kernel, configs, key, prune=None):
    """The autotuned kernel on a GPU; ``None`` under the interpreter (first config used)."""
    if INTERPRET:
        return None
    prune_by = {"early_config_prune": prune} if prune is not None else None
    return triton.autotune(configs=configs, key=key, prune_configs_by=prune_by)(kernel)


def launch_fwd(kernel, tuned, grid_of_bd, block_d: int, *args, **kwargs):
    """Launch a forward kernel: autotuned unless the plan fixes ``block_d``."""
    if tuned is not None and not block_d:
        wrap_triton(tuned)[lambda meta: grid_of_bd(meta["BD"])](*args, **kwargs)
    else:
        bd = block_d or FWD_CONFIGS[0].kwargs["BD"]
        wrap_triton(kernel)[grid_of_bd(bd)](*args, BD=bd, **kwargs)


def launch_bwd(kernel, tuned, grid, *args, **kwargs):
    if tuned is not None:
        wrap_triton(tuned)[grid](*args, **kwargs)
    else:
        wrap_triton(kernel)[grid](*args, **kwargs)


def bwd_block_d(block_d: int, width: int, tile: int, np_: int) -> int:
    """Backward channel block: ~8 (S, BD, NP) tiles live (state and adjoint scans, their
    coefficients, B/C), so keep S*BD*NP <= 2048 (16 floats per thread per tile at 4 warps)."""
    if block_d:
        return block_d
    return max(1, min(np2(width), 2048 // (tile * np_)))


def plan_outer(n_blocks: int, units: int, byte_cap: int, device: torch.device, bwd_sub: int) -> Tuple[int, int]:
    """(sub-blocks per program, outer blocks) for a backward with channel reductions.

    Every outer block adds one full-size partial buffer of the channel-reduced gradient
    (d(dbl) for the cross scan, dB/dC for the selective scan) that is written and summed
    again; more outer blocks only buy parallelism.  So: as many as fill the SMs at this
    batch (``units`` programs per outer block), at most ``byte_cap`` (partial traffic kept
    below ~2x the input's), at least one; remaining parallelism comes from chunking.
    """
    if bwd_sub:
        nsub = bwd_sub
    else:
        want = cdiv(sm_count(device), max(units, 1)) if device.type == "cuda" else 1
        n_outer = max(1, min(n_blocks, want, byte_cap))
        nsub = cdiv(n_blocks, n_outer)
    return nsub, cdiv(n_blocks, nsub)


def empty_grad(t: Tensor) -> Tensor:
    return t.new_empty((0,), dtype=torch.float32)


INT32_LIMIT = 2 ** 31 - 1


def check_int32(op: str, **sizes: int) -> None:
    """The kernels compute offsets in 32-bit integers: refuse buffers they cannot address."""
    for name, n in sizes.items():
        if n > INT32_LIMIT:
            raise ValueError(f"{op}: backend='triton' addresses {name} with 32-bit offsets, but it would have "
                             f"{n} elements (> 2**31 - 1); split the batch")


def operator(name: str, fake):
    """Define operator ``name`` from a Python body that launches Triton kernels.

    Compiled Triton: ``torch.library.triton_op``, so torch.compile traces into the body and
    sees the kernels (its fake kernel is derived from the body).  Under TRITON_INTERPRET=1
    ``wrap_triton`` hands back the bare interpreted kernel, which cannot be traced (it would
    run on fake tensors), so the op is an opaque ``custom_op`` with the explicit shape
    function ``fake`` instead.  Same name, schema and eager behaviour either way.
    """
    def deco(fn):
        if INTERPRET:
            op = torch.library.custom_op(name, mutates_args=())(fn)
            op.register_fake(fake)
            return op
        return triton_op(name, mutates_args=())(fn)
    return deco


def like(t: Tensor, dtype=None) -> Tensor:
    return torch.empty(t.shape, dtype=dtype or t.dtype, device=t.device)


def need_checkpoints(*tensors) -> bool:
    """Checkpoints are only worth writing when autograd will run a backward."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def backward_plan(forward_plan) -> tuple:
    """The backward operator's plan arguments ``(tile, chunk_tiles, block_d, bwd_sub)`` from the
    scan forward's ``(tile, chunk_tiles, block_d, need_ck)``; ``bwd_sub`` is read when the
    forward runs, so a :func:`scan_config` block covers the backward it records."""
    tile, chunk_tiles, block_d, _need_ck = forward_plan
    return (tile, chunk_tiles, block_d, CONFIG["bwd_sub"])
