"""Frontend: checkpoint loading and capture of PyTorch models into the IR."""
from .builder import CaptureError
from .capture import capture, encoded_input, torch_traces
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint

__all__ = ["CaptureError", "capture", "encoded_input", "torch_traces", "CheckpointError", "load_checkpoint",
           "save_checkpoint"]
