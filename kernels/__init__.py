"""Triton kernels of the HandS3C operators, importable as ``handS3C.triton_kernels``.

One file per operator, each with its forward and backward kernels:

* ``selective_scan``: mamba-ssm's ``selective_scan_fn`` (tiled register scans, tile
  checkpoints, chunk-parallel three-pass forward/backward, deterministic dB/dC);
* ``cross_scan``: the fused four-direction CrossScanSelectiveScan (directions by index
  arithmetic, delta from the rank-R dt_low in registers);
* ``s3c_merge``: LayerNorm(y_spatial + y_channel) * SiLU(z).

``_scan_common`` holds the shared tile helpers and ``_interpreter`` a speed-up of Triton's
CPU interpreter for the tests.  The launch plans and ``torch.library`` operators live in
``handS3C.ops._triton``; DESIGN.md explains the decomposition and the bytes moved.
"""
