"""Exporters (import name ``step_deploy.exporters``): NIR, ONNX, Lava process graphs.
Heavy optional dependencies are imported inside the exporter that needs them."""
