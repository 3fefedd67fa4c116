"""What snnTorch 1.0.0 and Norse 1.1.0 need to reproduce step-deploy's spikes from a NIR file.

Found by reading their importers and checked spike for spike in tests/test_nir_interop.py:

* **snnTorch** ``snntorch.import_nir.import_from_nir``: a NIR LIF becomes
  ``Leaky(beta = 1 - 1e-4/tau, reset_mechanism='zero', reset_delay=False, init_hidden=True)``
  with ``dt = 1e-4`` hard-coded, and ``r·dt/tau`` folded into the threshold (``hack_w_scale``);
  it fires on ``mem - threshold > 0``. Export with ``dt=1e-4`` and a LIF becomes
  ``mem' = (1 - 1/tau)·mem' + x``, threshold ``tau·θ'``: the IR neuron with ``mem' = tau·V``.
  Its IF import is unusable (``Leaky(beta=0.9)``, subtract reset, no hidden state, asserts
  ``r == 1``): export with ``dt=1`` and call :func:`fixup_snntorch`, which rebuilds every neuron
  (LIF and IF) from the NIR parameters. Hidden state lives in the modules: call
  ``snntorch.utils.reset(module)`` before each sequence (:func:`run_snntorch` does).
* **Norse** ``norse.torch.from_nir(graph, dt=1.0)``: LIF -> ``LIFBoxCell`` computing
  ``v + dt·(1/tau)·(x + v_leak - v)`` (the IR's arithmetic for tau = 2 bit for bit), IF ->
  ``IAFCell`` (``v + x``). Norse ignores ``r`` and ``v_reset`` (resets to 0) and silently drops
  nodes it has no module for — AvgPool2d among them, which corrupts the executor's graph:
  export with ``avgpool='conv'``. Its default ``dt=1e-3`` needs ``export_nir(dt=1e-3)`` and is then
  only approximately equal (``1/float32(tau·dt)·dt != 1/tau``).
"""
from __future__ import annotations

import keyword
from typing import Optional

import numpy as np

IMPORTER_SETTINGS: dict[str, dict] = {
    "snntorch": {
        "export": {"dt": 1e-4},
        "import": "snntorch.import_nir.import_from_nir(nir.read(path))",
        "fixup": None,
        "run": "snntorch.utils.reset(module) before a sequence; module(x_t) per step (batch axis first)",
        "limits": "LIF only (IF needs the 'snntorch-if' settings); one threshold and one tau per layer; v_reset = 0",
    },
    "snntorch-if": {
        "export": {"dt": 1.0},
        "import": "snntorch.import_nir.import_from_nir(nir.read(path))",
        "fixup": "fixup_snntorch(module, nir_graph)",
        "run": "as 'snntorch'",
        "limits": "rebuilds LIF and IF neurons; one threshold and one tau per layer; v_reset = 0",
    },
    "norse": {
        "export": {"dt": 1.0, "avgpool": "conv"},
        "import": "norse.torch.from_nir(nir.read(path), dt=1.0)",
        "fixup": None,
        "run": "out, state = module(x_t, state) per step, state=None at the start",
        "limits": "no AvgPool2d (hence avgpool='conv'), no Scale/Delay; r and v_reset ignored (need r=1, v_reset=0)",
    },
}


def settings_for(importer: str) -> dict:
    """``export_nir`` keyword arguments for an importer (a key of :data:`IMPORTER_SETTINGS`)."""
    if importer not in IMPORTER_SETTINGS:
        raise ValueError(f"unknown importer {importer!r}; known: {sorted(IMPORTER_SETTINGS)}")
    return dict(IMPORTER_SETTINGS[importer]["export"])


def torch_module_name(nir_name: str) -> str:
    """The attribute name nirtorch gives a NIR node (``.`` -> ``_``, keywords prefixed)."""
    name = nir_name.replace(".", "_")
    return "nir_node_" + name if keyword.iskeyword(name) else name


def fixup_snntorch(module, nir_graph, dt: Optional[float] = None):
    """Replace every neuron that ``snntorch.import_nir.import_from_nir`` built for a NIR LIF or IF
    with a ``snntorch.Leaky`` that follows NIR's Euler step at ``dt`` (default: the file's dt):
    LIF ``beta = 1 - dt/tau``, IF ``beta = 1``; threshold ``v_threshold/(r·dt/tau)`` (LIF) or
    ``v_threshold/(r·dt)`` (IF) so that snnTorch's unscaled input ``mem = beta·mem + x`` matches;
    reset to zero without delay. Returns the module (changed in place)."""
    import nir
    import snntorch as snn

    from . import nir_extensions as ext

    if dt is None:
        meta, _ = ext.decode(nir_graph.metadata)
        dt = float((meta or {}).get("dt", 1.0))
    for name, node in nir_graph.nodes.items():
        if not isinstance(node, (nir.LIF, nir.IF)):
            continue
        if not np.allclose(node.v_reset, 0.0) or (isinstance(node, nir.LIF) and not np.allclose(node.v_leak, 0.0)):
            raise ValueError(f"fixup_snntorch: {name}: snnTorch resets to 0 and has no leak potential")
        thr = np.asarray(node.v_threshold, dtype=np.float64)
        if isinstance(node, nir.LIF):
            tau, r = np.asarray(node.tau, dtype=np.float64), np.asarray(node.r, dtype=np.float64)
            beta, scale = 1.0 - dt / tau, r * dt / tau
        else:
            beta, scale = np.ones_like(thr), np.asarray(node.r, dtype=np.float64) * dt
        beta, threshold = np.unique(beta), np.unique(thr / scale)
        if beta.size != 1 or threshold.size != 1:
            raise ValueError(f"fixup_snntorch: {name}: snnTorch needs one beta and one threshold per layer")
        new = snn.Leaky(beta=float(np.float32(beta[0])), threshold=float(np.float32(threshold[0])),
                        reset_mechanism="zero", reset_delay=False, init_hidden=True)
        setattr(module, torch_module_name(name), new)
    return module


def _neuron_hooks(module, types, pick):
    traces: dict[str, list] = {}
    handles = []
    for name, sub in module.named_modules():
        if isinstance(sub, types):
            traces[name] = []
            handles.append(sub.register_forward_hook(
                lambda m, i, o, name=name: traces[name].append(pick(o).detach().clone())))
    return traces, handles


def run_snntorch(module, x):
    """Run an imported snnTorch module over ``x`` shaped ``(T, B, ...)``; returns
    ``(outputs (T, B, ...), {module name: spikes (T, B, ...)})`` for every Leaky."""
    import snntorch as snn
    import snntorch.utils
    import torch

    snntorch.utils.reset(module)
    traces, handles = _neuron_hooks(module, (snn.Leaky,), lambda o: o[0] if isinstance(o, tuple) else o)
    outs = []
    try:
        with torch.no_grad():
            for t in range(x.shape[0]):
                y = module(x[t])
                outs.append(y[0] if isinstance(y, tuple) else y)
    finally:
        for h in handles:
            h.remove()
    return torch.stack(outs), {k: torch.stack(v) for k, v in traces.items()}


def run_norse(module, x):
    """Run a Norse module from ``norse.torch.from_nir`` over ``x`` shaped ``(T, B, ...)``;
    returns ``(outputs, {module name: spikes})`` for every LIFBoxCell / IAFCell."""
    import torch
    from norse.torch import IAFCell, LIFBoxCell

    traces, handles = _neuron_hooks(module, (LIFBoxCell, IAFCell), lambda o: o[0])
    outs, state = [], None
    try:
        with torch.no_grad():
            for t in range(x.shape[0]):
                y, state = module(x[t], state)
                outs.append(y)
    finally:
        for h in handles:
            h.remove()
    return torch.stack(outs), {k: torch.stack(v) for k, v in traces.items()}
