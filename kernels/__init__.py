"""The Triton backend of the HandS3C operators, importable as ``handS3C.triton_kernels``.

One file per operator, each holding that operator's ``@triton.jit`` kernels (forward and
backward), its launch plan and its ``torch.library`` operators ``hands3c::<op>_{fwd,bwd}_triton``:

* ``selective_scan``: mamba-ssm's ``selective_scan_fn`` (tiled register scans, tile
  checkpoints, chunk-parallel three-pass forward/backward, deterministic dB/dC);
* ``cross_scan``: the fused four-direction CrossScanSelectiveScan (directions by index
  arithmetic, delta from the rank-R dt_low in registers);
* ``s3c_merge``: LayerNorm(y_spatial + y_channel) * SiLU(z).

Shared pieces: ``_plan`` (launch-plan helpers, autotune configurations, the operator
definition helper and :func:`scan_config`), ``_scan_common`` (tile helpers used inside the
kernels), ``_interpreter`` (a speed-up of Triton's CPU interpreter for the tests) and
``_compile_check`` (compiles every kernel to a cubin without a GPU).  The autograd of the
operators, shared with the C++ family, and the public entry points are in
``handS3C/ops/<op>.py``; DESIGN.md explains the decomposition and the bytes moved.

Why this folder is top-level but imported as ``handS3C.triton_kernels`` (setup.py's
``package_dir``): the project keeps its kernels beside ``csrc/`` (a fixed layout: one folder
per kernel language), while the Python code that uses them must import them from inside the
installed package.  Mapping the folder onto a subpackage name is the smallest honest way to
have both: no copy, no ``sys.path`` edits, and the import name says it belongs to handS3C.
"""
from ._plan import scan_config

__all__ = ["scan_config"]
