"""step-deploy: deploy trained Spiking Transformers (Spikformer, SDT, QKFormer) to NIR, ONNX,
Loihi (Lava) and FPGA, with spike-for-spike parity checks at every stage."""
__version__ = "0.1.0"


def load_checkpoint(path, arch=None):
    """Load a checkpoint (own format, STEP/timm, or bare state_dict with ``arch``) -> (model, info)."""
    from .frontend.checkpoint import load_checkpoint as _load

    return _load(path, arch=arch)


def build_model(arch, **overrides):
    """Build a named reference model (see ``step_deploy.models.CONFIGS``)."""
    from .models import build_model as _build

    return _build(arch, **overrides)
