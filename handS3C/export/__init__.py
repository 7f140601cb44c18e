"""ONNX export of the HandS3C operators and model (standard ONNX operators, no plugin)."""
from .onnx_ops import choose_chunk, translation_table
from .onnx_export import export_onnx

__all__ = ["export_onnx", "translation_table", "choose_chunk"]
