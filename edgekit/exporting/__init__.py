"""FP32 export to ONNX and TFLite with parity checked on every export, into one artifact directory."""

from edgekit.exporting.pipeline import FORMATS, ExportResult, export_model

__all__ = ["FORMATS", "ExportResult", "export_model"]
