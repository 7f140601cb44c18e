"""Triton kernels of the HandS3C operators, importable as ``handS3C.triton_kernels``.

One file per operator, each with its forward and backward kernels.
"""
