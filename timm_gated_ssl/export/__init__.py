"""Deployment outside PyTorch: ONNX export of plain, statically exported and gated models."""

from .onnx import OnnxExport, export_onnx, onnx_max_abs_diff

__all__ = ["OnnxExport", "export_onnx", "onnx_max_abs_diff"]
