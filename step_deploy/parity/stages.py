"""The stages of the parity matrix: each one runs the network its own way on a batch of samples
and returns its logits and every spiking layer's spikes, ``(T, B, ...)``, keyed by the IR node
names (which every stage shares: capture names nodes by module path and the quantizers keep them).

A new stage is one :func:`register_stage` call: a :class:`Stage` with its kind (float or integer),
its domain (integer stages of one domain must agree bit for bit) and a ``run`` function; the
pairs, the comparison kind, the report and the CLI's ``--stages`` follow from the registry.

``run`` may raise :class:`~step_deploy.parity.context.NotApplicable` (the stage cannot run this
model, or this machine lacks a package or a compiler): the matrix then says "not applicable:
why" in that stage's cells, never drops it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from .context import NotApplicable, StageContext, in_daemon_process, require_module

KINDS = ("float", "integer")
DOMAINS = ("float", "loihi", "fpga")


@dataclass(frozen=True)
class StageOutput:
    """One stage on one batch: ``logits`` ``(B, classes)``, ``traces`` ``{layer: (T, B, ...)}``,
    ``counters`` ``{"spikes": {layer: n}, "synops": {node: n}}`` as the stage counts them."""

    logits: torch.Tensor
    traces: dict
    counters: dict
    counter_source: str


@dataclass(frozen=True)
class Stage:
    """A registered stage. ``run(ctx, x, x_enc)``: ``x`` the raw inputs of the batch, ``x_enc`` the
    encoded ``(T, B, ...)`` inputs. ``per_sample``: the stage runs one sample at a time (its
    default sample limit is ``default_limit``). ``check(ctx)``: raises NotApplicable before any
    sample runs (cheap checks: packages, compilers, constraints)."""

    name: str
    title: str
    kind: str
    domain: str
    run: Callable[[StageContext, torch.Tensor, torch.Tensor], StageOutput]
    check: Optional[Callable[[StageContext], None]] = None
    default_limit: Optional[int] = None
    note: str = ""

    def __post_init__(self):
        if self.kind not in KINDS or self.domain not in DOMAINS:
            raise ValueError(f"stage {self.name!r}: kind {self.kind!r} / domain {self.domain!r} not in {KINDS} / "
                             f"{DOMAINS}")
        if (self.kind == "float") != (self.domain == "float"):
            raise ValueError(f"stage {self.name!r}: float stages live in the float domain, integer stages in an "
                             "integer domain")


_STAGES: dict[str, Stage] = {}


def register_stage(stage: Stage) -> Stage:
    if stage.name in _STAGES and _STAGES[stage.name] != stage:
        raise ValueError(f"stage {stage.name!r} is registered twice")
    _STAGES[stage.name] = stage
    return stage


def registered_stages() -> dict[str, Stage]:
    return dict(_STAGES)


def pair_kind(a: Stage, b: Stage) -> str:
    """``float``: both float (compared with the rounding attribution); ``exact``: two integer
    stages of one domain (bit-exact); ``quantized``: anything else (agreement reported only)."""
    if a.kind == b.kind == "float":
        return "float"
    if a.kind == b.kind == "integer" and a.domain == b.domain:
        return "exact"
    return "quantized"


# ------------------------------------------------------------------------- counters


def counters_from_counts(counts) -> dict:
    """``energy.counters`` rows -> ``{"spikes": {neuron: [per sample]}, "synops": {synapse: [per sample]}}``."""
    spikes = {r.name: r.per_sample("spikes").tolist() for r in counts.rows if r.kind == "neuron"}
    synops = {r.name: r.per_sample("synops").tolist() for r in counts.rows if r.kind == "synapse"}
    return {"spikes": spikes, "synops": synops}


def counters_from_traces(traces: dict) -> dict:
    """Spikes per layer and sample counted from the traces (stages without their own counters)."""
    return {"spikes": {k: (v != 0).reshape(v.shape[0], v.shape[1], -1).sum((0, 2)).tolist()
                       for k, v in traces.items()}}


def _graph_counters(graph, traces: dict, steps: int) -> dict:
    from step_deploy.energy.counters import count_graph

    return counters_from_counts(count_graph(graph, traces, steps))


def _neurons(graph) -> list[str]:
    from step_deploy import ir

    return [n.name for n in graph.topo_order() if isinstance(n, ir.Neuron)]


# ------------------------------------------------------------------------- float stages


def _run_torch(ctx: StageContext, x, x_enc) -> StageOutput:
    from step_deploy.energy.counters import count_graph
    from step_deploy.energy.torch_hooks import hook_traces
    from step_deploy.frontend import torch_traces

    from step_deploy.frontend.neuron_groups import group_traces

    logits, traces = torch_traces(ctx.model, x)
    traces = group_traces(ctx.graph, traces)  # IR neurons that stand for several modules (SEMM's stacked experts)
    with torch.no_grad():
        hooked = hook_traces(ctx.model, x, ctx.graph, ctx.steps)
    counts = count_graph(ctx.graph, hooked, ctx.steps)
    return StageOutput(logits, traces, counters_from_counts(counts),
                       "energy.counters on the PyTorch model's forward hooks")


def _run_reference(ctx: StageContext, x, x_enc) -> StageOutput:
    from step_deploy.energy.counters import needed_traces
    from step_deploy.simulators.reference import run

    neurons = _neurons(ctx.graph)
    res = run(ctx.graph, x_enc, record=sorted(set(neurons) | set(needed_traces(ctx.graph))))
    traces = {k: res.traces[k] for k in neurons}
    return StageOutput(res.final(), traces, _graph_counters(ctx.graph, res.traces, ctx.steps),
                       "energy.counters on the interpreter's traces")


def _check_onnx(ctx):
    require_module("onnx", "onnx")
    require_module("onnxruntime", "onnxruntime")


def _run_onnx(ctx: StageContext, x, x_enc) -> StageOutput:
    from step_deploy.exporters.onnx_runner import run_onnx

    res = run_onnx(None, x_enc, record=True, session=ctx.onnx)
    return StageOutput(res.final(), dict(res.traces), counters_from_traces(res.traces), "spikes counted from traces")


def _check_nir(ctx):
    require_module("nir", "nir")


def _run_nir(ctx: StageContext, x, x_enc) -> StageOutput:
    from step_deploy.simulators.reference import run

    res = run(ctx.nir_graph, x_enc, record=True)
    return StageOutput(res.final(), dict(res.traces), counters_from_traces(res.traces), "spikes counted from traces")


# ------------------------------------------------------------------------- Loihi stages


def _golden(ctx: StageContext, qgraph, x_enc) -> StageOutput:
    """The integer golden model of ``qgraph``, with the energy module's counters on its traces."""
    from step_deploy.energy.counters import needed_traces
    from step_deploy.simulators.golden import run_golden, spiking_nodes

    spiking = spiking_nodes(qgraph)
    res = run_golden(qgraph, x_enc, record=sorted(set(spiking) | set(needed_traces(qgraph))))
    return StageOutput(res.final(), {k: res.traces[k] for k in spiking},
                       _graph_counters(qgraph, res.traces, ctx.steps), "energy.counters on the golden traces")


def _run_golden_loihi(ctx: StageContext, x, x_enc) -> StageOutput:
    return _golden(ctx, ctx.loihi[1], x_enc)


def _check_loihi(ctx):
    ctx.loihi  # noqa: B018  (raises NotApplicable when the network does not fit the chip)


def _check_lava(ctx):
    require_module("lava", "lava-nc")
    if in_daemon_process():
        raise NotApplicable("Lava starts OS processes and this Dask worker is daemonic: start the workers with "
                            "DASK_DISTRIBUTED__WORKER__DAEMON=False (step-parity's own cluster does)")
    _check_loihi(ctx)


def _run_lava(ctx: StageContext, x, x_enc) -> StageOutput:
    from step_deploy.exporters.lava_compat import import_lava
    from step_deploy.exporters.lava_runner import run_lava

    import_lava()
    _, qgraph, _ = ctx.loihi
    logits, traces = [], {}
    for i in range(x_enc.shape[1]):
        res = run_lava(qgraph, x_enc[:, i], steps=ctx.steps)
        logits.append(res.final())
        for k, v in res.traces.items():
            traces.setdefault(k, []).append(v)
    traces = {k: torch.cat(v, dim=1) for k, v in traces.items()}
    return StageOutput(torch.cat(logits), traces, counters_from_traces(traces), "spikes counted from traces")


def _mesh_hardware(ctx) -> str:
    o = ctx.options
    if o.mesh_hardware:
        return o.mesh_hardware
    return {"loihi1": "loihi1", "loihi2": "loihi2-assumed"}.get(o.chip, "loihi2-assumed")


def _check_cycle_loihi(ctx):
    from step_deploy.simulators.cycle import HardwareError, load_hardware

    _check_loihi(ctx)
    try:
        load_hardware(_mesh_hardware(ctx))
    except HardwareError as e:
        raise NotApplicable(str(e)) from None


def _run_cycle_loihi(ctx: StageContext, x, x_enc) -> StageOutput:
    from step_deploy.simulators.cycle.mesh import simulate_mesh

    graph, qgraph, spec = ctx.loihi
    r = simulate_mesh(qgraph, graph, x_enc, hardware=_mesh_hardware(ctx), target=spec.name, record=True)
    spikes = {k: int(lay["events"].get("spikes_out", 0)) for k, lay in r.layers.items() if k in r.spikes}
    synops = {}
    for lay in r.layers.values():
        for node, n in lay.get("synops_by_node", {}).items():
            synops[node] = synops.get(node, 0) + int(n)
    final = {k: v[-1] for k, v in r.outputs.items()} if r.outputs else {}
    logits = next(iter(final.values()))
    return StageOutput(logits, dict(r.spikes), {"spikes": spikes, "synops": synops},
                       "the simulator's own events (packets and synaptic operations)")


# ------------------------------------------------------------------------- FPGA stages


def _run_golden_fpga(ctx: StageContext, x, x_enc) -> StageOutput:
    return _golden(ctx, ctx.fpga[0], x_enc)


def _check_csim(ctx):
    ctx.hls  # noqa: B018  (NotApplicable without g++ / ap_types; compiles once per worker, cached by hash)


def _run_csim(ctx: StageContext, x, x_enc) -> StageOutput:
    from step_deploy.fpga.parity import golden_run
    from step_deploy.simulators.golden import spiking_nodes

    proj, model = ctx.hls
    xin, _, _ = golden_run(proj, x_enc)  # the top's integer inputs (the input quantizer's output)
    res = model.predict(xin)
    spiking = set(spiking_nodes(proj.graph))
    traces = {k: torch.from_numpy(v) for k, v in res.traces.items() if k in spiking}
    logits = torch.from_numpy(res.outputs.reshape(len(res.outputs), -1))
    return StageOutput(logits, traces, counters_from_traces(traces), "spikes counted from traces")


def _run_cycle_fpga(ctx: StageContext, x, x_enc) -> StageOutput:
    from step_deploy.simulators.cycle.fpga_dataflow import simulate_fpga

    qgraph, par, part = ctx.fpga
    r = simulate_fpga(qgraph, x_enc, part=part, clock_mhz=ctx.options.clock_mhz, parallelism=par, schedule="step",
                      record=True)
    spikes = {k: int(lay["events"].get("spikes_out", 0)) for k, lay in r.layers.items() if k in r.spikes}
    synops = {k: int(lay["events"]["synops"]) for k, lay in r.layers.items() if lay["events"].get("synops")}
    final = {k: v[-1] for k, v in r.outputs.items()} if r.outputs else {}
    logits = next(iter(final.values()))
    return StageOutput(logits, dict(r.spikes), {"spikes": spikes, "synops": synops},
                       "the simulator's per-kernel events")


for _s in (
    Stage("torch", "PyTorch (float32)", "float", "float", _run_torch),
    Stage("reference", "reference interpreter (float32 IR)", "float", "float", _run_reference),
    Stage("onnx", "ONNX, onnxruntime", "float", "float", _run_onnx, _check_onnx),
    Stage("nir", "NIR written and read back", "float", "float", _run_nir, _check_nir),
    Stage("golden-loihi", "golden model, Loihi fixed_pt", "integer", "loihi", _run_golden_loihi, _check_loihi),
    Stage("lava", "Lava Loihi2SimCfg fixed_pt", "integer", "loihi", _run_lava, _check_lava, default_limit=4,
          note="seconds per sample: 4 samples unless --limit lava=N"),
    Stage("golden-fpga", "golden model, FPGA integer", "integer", "fpga", _run_golden_fpga),
    Stage("csim", "HLS C simulation (g++)", "integer", "fpga", _run_csim, _check_csim, default_limit=64),
    Stage("cycle-loihi", "cycle-level mesh simulator", "integer", "loihi", _run_cycle_loihi, _check_cycle_loihi),
    Stage("cycle-fpga", "cycle-level FPGA dataflow simulator", "integer", "fpga", _run_cycle_fpga),
):
    register_stage(_s)
