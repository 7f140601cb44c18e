"""``export_onnx``: the HandS3C model (or any module calling the ``hands3c`` operators) to ONNX.

The model is captured with ``torch.export`` and converted by ``torch.onnx.export(...,
dynamo=True)`` with :func:`handS3C.export.onnx_ops.translation_table`, which writes the
``hands3c`` operators as standard ONNX operators (see that module for the chunked scan).
"""
from __future__ import annotations

import os
import tempfile
from typing import Optional, Sequence, Tuple, Union

import torch

from .onnx_ops import translation_table

__all__ = ["export_onnx", "export_module", "MODEL_OUTPUTS", "MIN_OPSET"]

MIN_OPSET = 18
# The outputs the exported model returns, in this order (the model's forward dict keys).
MODEL_OUTPUTS = ("joints2d", "joints3d", "verts", "pose", "pose_rotmat", "shape", "heatmaps")

# For each operator, the outputs an inference graph may read; the others (backward-only
# by-products) are written as zeros by the translations.
_READABLE_OUTPUTS = {
    "cross_scan_fwd": {0, 1},
    "selective_scan_fwd": {0, 1},
    "s3c_merge_fwd": {0, 1, 2},
}


def _check_readable(ep: "torch.export.ExportedProgram") -> None:
    import operator

    for node in ep.graph.nodes:
        if node.op != "call_function" or not str(node.target).startswith("hands3c."):
            continue
        name = str(node.target).split(".")[1]
        allowed = _READABLE_OUTPUTS.get(name)
        if allowed is None:
            raise ValueError(f"export_onnx: operator {node.target} has no ONNX translation "
                             f"(translated: {sorted(_READABLE_OUTPUTS)})")
        for user in node.users:
            if user.target is operator.getitem and (user.args[1] in allowed or not user.users):
                continue
            which = user.args[1] if user.target is operator.getitem else "all"
            raise ValueError(f"export_onnx: the graph reads output {which} of {node.target}, a backward-only "
                             "by-product the ONNX translation does not compute; export an inference graph "
                             "(model.eval(), no gradients)")


def _atomic_save(onnx_program, path: str) -> None:
    folder = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".onnx", dir=folder)
    os.close(fd)
    try:
        onnx_program.save(tmp, external_data=False)
        with open(tmp, "rb+") as fh:
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def export_module(module: torch.nn.Module, args: Tuple[torch.Tensor, ...], path: Union[str, os.PathLike], *,
                  opset: int = MIN_OPSET, dynamic_shapes=None, input_names: Optional[Sequence[str]] = None,
                  output_names: Optional[Sequence[str]] = None, check: bool = True):
    """Export ``module(*args)`` to the ONNX file ``path`` with the ``hands3c`` translations.

    Returns the ``torch.onnx.ONNXProgram``.  ``check`` runs ``onnx.checker`` (full check, with
    shape inference) on the written file."""
    if not isinstance(opset, int) or opset < MIN_OPSET:
        raise ValueError(f"export_onnx: opset must be an int >= {MIN_OPSET} (LayerNormalization with "
                         f"stash_type, ReduceSum with axes as an input), got {opset!r}")
    path = os.fspath(path)
    with torch.no_grad():
        ep = torch.export.export(module, args, dynamic_shapes=dynamic_shapes, strict=False)
    _check_readable(ep)
    program = torch.onnx.export(ep, args, dynamo=True, custom_translation_table=translation_table(),
                                opset_version=opset, input_names=input_names, output_names=output_names,
                                verbose=False, optimize=True)
    _atomic_save(program, path)
    if check:
        import onnx

        onnx.checker.check_model(path, full_check=True)
    return program


class _OrderedOutputs(torch.nn.Module):
    """The model with its dict output flattened to :data:`MODEL_OUTPUTS`' order."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, images):
        out = self.model(images)
        return tuple(out[k] for k in MODEL_OUTPUTS)


def export_onnx(model: torch.nn.Module, path: Union[str, os.PathLike], input_size: Optional[int] = None,
                opset: int = MIN_OPSET, dynamic_batch: bool = True, example_batch: int = 2):
    """Export a :class:`handS3C.HandS3C` model to ``path`` (a self-contained ``.onnx`` file).

    Args:
        model: the model (its weights are embedded; the S3C block's ``hands3c`` operators are
            exported through the CPU operators' translations whatever its backend).
        path: output file, written atomically.
        input_size: 256 or 224; defaults to (and must equal) ``model.input_size``.
        opset: ONNX opset (>= 18).
        dynamic_batch: the batch dimension of ``images`` is symbolic (``batch``) instead of
            ``example_batch``.

    The file has one input ``images`` (batch, 3, S, S) float32 RGB in [0, 1] and the outputs
    :data:`MODEL_OUTPUTS` (shapes as in ``HandS3C.forward``).  Returns the ``ONNXProgram``.
    """
    size = getattr(model, "input_size", None)
    if input_size is None:
        input_size = size
    if size is not None and input_size != size:
        raise ValueError(f"export_onnx: input_size={input_size} does not match the model's input_size={size}; "
                         "build the model for that size")
    if input_size not in (224, 256):
        raise ValueError(f"export_onnx: input_size must be 224 or 256, got {input_size!r}")
    if not isinstance(example_batch, int) or example_batch < 2:
        raise ValueError(f"export_onnx: example_batch must be an int >= 2 (a batch of 1 would be specialised), "
                         f"got {example_batch!r}")
    was_training = model.training
    old_backend = getattr(model, "backend", None)
    model.eval()
    if old_backend is not None:
        model.backend = "cpu"
    try:
        images = torch.rand(example_batch, 3, input_size, input_size)
        dyn = {"images": {0: torch.export.Dim.AUTO}} if dynamic_batch else None
        return export_module(_OrderedOutputs(model), (images,), path, opset=opset,
                             dynamic_shapes=dyn, input_names=["images"], output_names=list(MODEL_OUTPUTS))
    finally:
        if old_backend is not None:
            model.backend = old_backend
        model.train(was_training)
