"""The resource and latency model behind ``step_deploy.fpga.estimate`` (whose docstring states the
model, section "Model"): the per-layer models, ``LayerEstimate``, ``DesignEstimate``, the errors,
and ``DesignModel``, the layer models of one graph that ``estimate`` and ``auto_parallelism`` share.
Every number is an estimate, not a synthesis result."""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from math import ceil, prod
from numbers import Integral
from typing import Mapping, Optional

from step_deploy import ir
from step_deploy.errors import StepDeployError, UsageError
from step_deploy.fixedpoint import fpga as fx

from .memory_blocks import RULE as MEMORY_RULE, Memory, place
from .parts import RESOURCES, FpgaPart
from .tensor_types import ALIAS_OPS, TensorType, UnsupportedForFpga, tensor_types

PIPELINE_DEPTH = 8
LAYER_CONTROL_LUT = 150
DESIGN_CONTROL_LUT = 1_500
DESIGN_CONTROL_FF = 2_500
FF_PER_LUT = 1.5
POPCOUNT_WORD = 64
SHIFT_BITS = 6
#: DSP48E2 multiplier inputs (27 × 18); wider operands take two slices
DSP_A_BITS, DSP_B_BITS = 27, 18

HOST_OPS = ("FpgaQuantizeInput",)
PORT_OPS = ("Input", "Output")
COMPUTE_OPS = ("FpgaConv2d", "FpgaConv1d", "FpgaLinear", "FpgaLIF", "FpgaTemporalSum", "MatMul", "Add", "Mul",
               "Sum", "MaxPool2d", "Transpose", "ReLU", "Shiftmax", "TemporalBlockSum")
ESTIMATE_LABEL = "estimate (analytical model, not synthesis results)"
#: the rules every per-layer ``model`` line follows, for reports
MODEL_RULES = (
    f"schedule: time steps outermost, layers one after another inside a step (no DATAFLOW overlap); "
    f"cycles/sample = T x sum over layers of (cycles/step + {PIPELINE_DEPTH} pipeline depth)",
    "state (membranes, readout sums) and every layer's output buffer stay on chip for the whole sample; "
    "weights are const ROMs on chip",
    "synapses: P output-channel lanes, fan-in loop at II=1: cycles = ceil(C_out/P) x positions x fan_in; "
    "spike input: gated adders, 0 DSP; ternary spike input: adder-subtractors, 0 DSP; multi-bit input: 1 DSP per lane",
    "LIF: P neurons per cycle, 4 x membrane_bits LUTs per lane (ILIF: + (D - 1) comparators of membrane_bits + 1; "
    "soft reset: + spike_bits x membrane_bits); integer spikes are ceil(log2(D + 1))-bit buffer values; MatMul on spikes: AND + popcount of 64-bit "
    "words; ternary operands: signed adds, 0 DSP; other ops: P elements per cycle",
    "seed attention ops: ReLU a comparator + mux per lane; Shiftmax per row lane a max comparator, a "
    "subtractor, two barrel shifters, an adder and a leading-zero counter, 3 passes over the row; "
    "TemporalBlockSum (window op, block B) an accumulator per lane, 2 passes (accumulate, write) per step; "
    "a graph holding a window op runs block-major: every output buffer holds B steps",
    "memories: " + MEMORY_RULE,
    f"control: {LAYER_CONTROL_LUT} LUT per layer + {DESIGN_CONTROL_LUT} LUT / {DESIGN_CONTROL_FF} FF per design; "
    f"FF = {FF_PER_LUT} x logic LUT",
    "FpgaQuantizeInput runs on the host (0 resources); Reshape/Flatten are free; Input/Output are ports",
)


class EstimateError(StepDeployError, ValueError):
    """The graph cannot be estimated (not an FPGA-quantized graph, a layer with no FPGA kernel)."""


class ParallelismError(UsageError):
    """A ``--parallelism`` value or per-layer override that cannot work; the message names it."""


class FitError(StepDeployError):
    """The design does not fit the part. ``over`` lists ``(layer, resource, need, have)``; the
    message names the largest user of each resource that does not fit and what to do."""

    def __init__(self, est: "DesignEstimate", over: list, budget: float = 1.0):
        self.estimate, self.over, self.budget = est, list(over), budget
        super().__init__(fit_message(est, self.over, budget))


@dataclass(frozen=True)
class LayerEstimate:
    """One compute node at parallelism ``parallelism``: cycles per time step, resources and the
    memory it owns (bits). ``model`` is the one-line formula behind the numbers (an estimate)."""

    node: str
    op: str
    parallelism: int
    cycles_per_step: int
    dsp: int
    bram36: int
    uram: int
    lut: int
    ff: int
    weight_bits: int
    state_bits: int
    buffer_bits: int
    model: str

    def resource(self, name: str) -> int:
        return getattr(self, name)


@dataclass(frozen=True)
class DesignEstimate:
    """The whole design: ``layers`` in graph order plus the design control overhead. Totals are
    properties; ``fits()`` compares them with the part, ``over_budget()`` says what does not fit."""

    part: FpgaPart
    clock_mhz: float
    steps: int
    layers: tuple[LayerEstimate, ...]
    host: tuple[str, ...] = ()

    def _total(self, r: str) -> int:
        extra = {"lut": DESIGN_CONTROL_LUT, "ff": DESIGN_CONTROL_FF}.get(r, 0)
        return sum(getattr(l, r) for l in self.layers) + extra

    dsp = property(lambda self: self._total("dsp"))
    bram36 = property(lambda self: self._total("bram36"))
    uram = property(lambda self: self._total("uram"))
    lut = property(lambda self: self._total("lut"))
    ff = property(lambda self: self._total("ff"))

    @property
    def cycles_per_step(self) -> int:
        return sum(step_cycles(l) for l in self.layers)

    @property
    def cycles_per_sample(self) -> int:
        return self.steps * self.cycles_per_step

    @property
    def latency_ms(self) -> float:
        return self.cycles_per_sample / (self.clock_mhz * 1e3)

    def totals(self) -> dict[str, int]:
        return {r: self._total(r) for r in RESOURCES}

    def parallelism(self) -> dict[str, int]:
        return {l.node: l.parallelism for l in self.layers}

    def utilisation(self) -> dict[str, float]:
        """``{resource: need / have}`` (``inf`` where the part has none of a resource the design needs)."""
        have = self.part.resources()
        return {r: (n / have[r] if have[r] else (0.0 if n == 0 else float("inf"))) for r, n in self.totals().items()}

    def over_budget(self, budget: float = 1.0) -> list[tuple[str, str, int, int]]:
        """``(layer, resource, need, have)`` for each resource whose total exceeds ``budget × have``:
        ``layer`` is its largest user (first in graph order on a tie), ``need`` the design's total."""
        out = []
        have = self.part.resources()
        for r, n in self.totals().items():
            if n > budget * have[r]:
                users = [l for l in self.layers if getattr(l, r) > 0]
                top = max(users, key=lambda l: getattr(l, r)).node if users else "(design control)"
                out.append((top, r, n, have[r]))
        return out

    def fits(self, budget: float = 1.0) -> bool:
        return not self.over_budget(budget)

    def require_fit(self, budget: float = 1.0) -> "DesignEstimate":
        """Return ``self`` if it fits ``budget ×`` the part, else raise ``FitError``."""
        over = self.over_budget(budget)
        if over:
            raise FitError(self, over, budget)
        return self

    def layer(self, node: str) -> LayerEstimate:
        for l in self.layers:
            if l.node == node:
                return l
        raise KeyError(f"no compute node {node!r} in the estimate")


def step_cycles(layer: LayerEstimate) -> int:
    """Cycles one layer's kernel takes per time step in the generated design: its II = 1 loop
    (``cycles_per_step``) plus ``PIPELINE_DEPTH`` of pipeline fill. The one per-layer time formula of
    the estimate and of the cycle-level FPGA simulator (``simulators.cycle.fpga_dataflow``)."""
    return layer.cycles_per_step + PIPELINE_DEPTH


def fit_message(est: DesignEstimate, over: list, budget: float = 1.0) -> str:
    """One line per resource that does not fit, naming the largest user and what to do."""
    part = est.part
    head = f"the design does not fit {part.name} ({part.part})" + (f" within {budget:.0%} of it" if budget != 1 else "")
    parts = []
    for node, r, need, have in over:
        l = next((x for x in est.layers if x.node == node), None)
        mine = f"; largest user {node!r} ({l.op}, P={l.parallelism}) needs {getattr(l, r):,}" if l else ""
        if r in ("dsp", "lut", "ff"):
            fix = (f"lower its parallelism (--parallelism {node}=N, or --parallelism auto) or choose a bigger part "
                   "(--part vcu118 or a spec file)")
        else:
            fix = ("weights, membranes and buffers all stay on chip: lower the parallelism (banks round up), use "
                   "fewer --weight-bits, a smaller model, or a bigger part (--part vcu118 or a spec file)")
        parts.append(f"{r} needs {need:,} of {have:,} (estimate){mine}: {fix}")
    return head + ": " + "; ".join(parts)


# ---------------------------------------------------------------------------------------------- layers


def lif_lane_lut(n: fx.FpgaLIF) -> tuple[int, str]:
    """LUTs of one LIF lane and the formula: ``4 × membrane_bits`` (add, shift, compare, mux: STEP's
    LIF); a ternary neuron adds its ``-θ`` comparator (``membrane_bits + 1``); ILIF
    (``fire='round'``, D levels) adds ``D - 1`` comparators of ``membrane_bits + 1`` bits (the
    kernel's comparator ladder, no divider); a soft reset subtracts ``S·θ`` instead of muxing 0:
    ``spike_bits × membrane_bits`` (the subtractor and the shift-adds of ``S·θ``)."""
    mb = int(n.membrane_bits)
    lut, txt = 4 * mb, f"4 x {mb} membrane bits"
    if n.fire == "ternary":  # the second comparator, against -θ
        lut += mb + 1
        txt += f" + ternary -θ comparator {mb + 1}"
    if n.fire == "round" and int(n.max_level) > 1:
        lut += (int(n.max_level) - 1) * (mb + 1)
        txt += f" + ILIF {int(n.max_level) - 1} more comparators x {mb + 1}"
    if n.reset == "soft":
        lut += n.spike_bits * mb
        txt += f" + soft reset {n.spike_bits} x {mb}"
    return lut, txt


def _dsp_per_mult(a_bits: int, b_bits: int) -> int:
    hi, lo = max(a_bits, b_bits), min(a_bits, b_bits)
    return 1 if hi <= DSP_A_BITS and lo <= DSP_B_BITS else 2


@dataclass(frozen=True)
class _Shape:
    """What a layer model needs: the parallel dimension ``n``, ``cycles(P)``, per-lane DSP/LUT,
    memories as ``(role, bits, word_bits, rom, banked)`` and a formula text."""

    n: int
    cycles_fn: object
    lane_dsp: int
    lane_lut: int
    memories: tuple
    text: object  # P -> str


def _barrel_lut(bits: int) -> int:
    """LUTs of a barrel shifter of ``bits``-bit values: ``bits x ceil(log2 bits)`` 2:1 muxes."""
    return bits * max(1, math.ceil(math.log2(max(2, bits))))


def _layer_shape(n: ir.Node, shapes: dict, tt: dict[str, TensorType], block: int = 1) -> _Shape:
    """The layer model of ``n``; ``block`` > 1 when the design runs block-major (a window op in the
    graph): every output buffer then holds ``block`` steps."""
    op = n.op
    out_t = tt[n.name]
    buf = ("buffer", out_t.storage_bits * block, out_t.bits, False)
    if isinstance(n, fx.FPGA_SYNAPSES):
        w = n.weight
        c_out = int(w.shape[0])
        fan_in = int(prod(w.shape[1:]))
        out_shape = shapes[n.name]
        positions = int(prod(out_shape[:-1])) if op == "FpgaLinear" else int(prod(out_shape[1:]))
        x = tt[n.inputs[0]]
        spike_in, ternary_in = x.spike, x.ternary
        dsp = 0 if (spike_in or ternary_in) else _dsp_per_mult(x.bits, n.weight_bits)
        lut = ((n.acc_bits + n.out_bits) if spike_in else (2 * n.acc_bits + n.out_bits) if ternary_in
               else n.out_bits)
        bias = (n.acc_bits if n.bias is not None else 0) + SHIFT_BITS
        mems = (("weights", int(w.size) * n.weight_bits, n.weight_bits, True),
                ("bias", c_out * bias, bias, True), buf)
        kind = ("spike input: gated adders" if spike_in else "ternary input: adder-subtractors" if ternary_in
                else f"{x.bits}-bit input: {dsp} DSP/lane")
        acc_txt = f"acc {n.acc_bits} + " if spike_in else f"add/sub 2 x {n.acc_bits} + " if ternary_in else ""
        return _Shape(c_out, lambda p: ceil(c_out / p) * positions * fan_in, dsp, lut, mems,
                      lambda p: (f"synapse, {kind}: cycles = ceil({c_out}/P={p}) x {positions} positions x "
                                 f"{fan_in} fan-in; LUT/lane = {lut} ({acc_txt}out {n.out_bits} round/sat); "
                                 f"weights {int(w.size)} x {n.weight_bits} b ROM in P banks"))
    if isinstance(n, fx.FpgaLIF):
        N, mb = out_t.size, int(n.membrane_bits)
        mems = (("state", N * mb, mb, False), buf)
        lut, lut_txt = lif_lane_lut(n)
        return _Shape(N, lambda p: ceil(N / p), 0, lut, mems,
                      lambda p: (f"LIF: cycles = ceil({N}/P={p}); LUT/lane = {lut_txt}; "
                                 f"membrane {N} x {mb} b in P banks; spikes {out_t.bits} b each"))
    if isinstance(n, fx.FpgaTemporalSum):
        N, b = out_t.size, int(n.bits)
        return _Shape(N, lambda p: ceil(N / p), 0, 2 * b, (("state", N * b, b, False),),
                      lambda p: (f"readout sum: cycles = ceil({N}/P={p}); LUT/lane = 2 x {b} (add + saturate); "
                                 "output is the state"))
    E = out_t.size
    if op == "MatMul":
        a, b = (tt[i] for i in n.inputs)
        sa = shapes[n.inputs[0]]
        K = int(sa[-2] if n.transpose_a else sa[-1])
        if a.spike and b.spike:
            words = ceil(K / POPCOUNT_WORD)
            lut = POPCOUNT_WORD + 2 * out_t.bits
            return _Shape(E, lambda p: ceil(E / p) * words, 0, lut, (buf,),
                          lambda p: (f"spike MatMul, AND + popcount: cycles = ceil({E}/P={p}) x ceil({K}/64); "
                                     f"LUT/lane = {lut}"))
        signed = a.ternary or b.ternary
        dsp = 0 if (a.spike or b.spike or signed) else _dsp_per_mult(a.bits, b.bits)
        lut = 2 * out_t.bits if signed else out_t.bits
        kind = ("signed accumulate (ternary)" if signed else "gated accumulate") if dsp == 0 else f"{dsp} DSP/lane"
        return _Shape(E, lambda p: ceil(E / p) * K, dsp, lut, (buf,),
                      lambda p: f"MatMul, {kind}: cycles = ceil({E}/P={p}) x {K}; LUT/lane = {lut}")
    if op == "Add":
        lut = (len(n.inputs) - 1) * out_t.bits
        return _Shape(E, lambda p: ceil(E / p), 0, lut, (buf,),
                      lambda p: f"Add: cycles = ceil({E}/P={p}); LUT/lane = {lut}")
    if op == "Mul":
        a, b = (tt[i] for i in n.inputs)
        if a.spike and b.spike:
            dsp, lut, kind = 0, 1, "AND"
        elif a.spike or b.spike:
            dsp, lut, kind = 0, out_t.bits, "gated"
        else:
            dsp, lut, kind = _dsp_per_mult(a.bits, b.bits), 0, "multiply"
        return _Shape(E, lambda p: ceil(E / p), dsp, lut, (buf,),
                      lambda p: f"Mul ({kind}): cycles = ceil({E}/P={p}); DSP/lane = {dsp}, LUT/lane = {lut}")
    if op == "Sum":
        k = int(shapes[n.inputs[0]][n.axis])
        lut = out_t.bits
        return _Shape(E, lambda p: ceil(E / p) * k, 0, lut, (buf,),
                      lambda p: f"Sum: cycles = ceil({E}/P={p}) x {k} reduced; LUT/lane = {lut}")
    if op == "MaxPool2d":
        win = int(prod(n.kernel_size))
        lut = 2 * out_t.bits
        return _Shape(E, lambda p: ceil(E / p) * win, 0, lut, (buf,),
                      lambda p: f"MaxPool2d: cycles = ceil({E}/P={p}) x {win} window; LUT/lane = {lut}")
    if op == "Transpose":
        lut = out_t.bits
        return _Shape(E, lambda p: ceil(E / p), 0, lut, (buf,),
                      lambda p: f"Transpose (copy): cycles = ceil({E}/P={p}); LUT/lane = {lut}")
    if op == "ReLU":
        lut = out_t.bits
        return _Shape(E, lambda p: ceil(E / p), 0, lut, (buf,),
                      lambda p: f"ReLU: cycles = ceil({E}/P={p}); LUT/lane = {lut} (compare + mux)")
    if op == "Shiftmax":
        x = tt[n.inputs[0]]
        s_in = shapes[n.inputs[0]]
        length = int(s_in[n.axis % len(s_in)])
        rows = E // length
        sum_bits = out_t.bits  # F + L + 1: the row sum and every output
        lut = 2 * x.bits + 1 + 2 * _barrel_lut(sum_bits) + 2 * sum_bits
        return _Shape(rows, lambda p: ceil(rows / p) * 3 * length, 0, lut, (buf,),
                      lambda p: (f"Shiftmax: cycles = ceil({rows} rows/P={p}) x 3 passes x {length}; LUT/lane = "
                                 f"{lut} (max comparator {x.bits} + subtractor {x.bits + 1} + 2 barrel shifters "
                                 f"{_barrel_lut(sum_bits)} + adder {sum_bits} + leading-zero count {sum_bits}), 0 DSP"))
    if op == "TemporalBlockSum":
        b = int(n.block)
        lut = out_t.bits
        return _Shape(E, lambda p: 2 * ceil(E / p), 0, lut, (buf,),
                      lambda p: (f"TemporalBlockSum (window of {b} steps, latency {b - 1}): cycles/step = 2 passes "
                                 f"x ceil({E}/P={p}); LUT/lane = {lut} (an accumulator of {out_t.bits} b); "
                                 f"buffers hold {block} steps"))
    raise EstimateError(f"node {n.name!r} ({op}) has no FPGA kernel and no estimate; the FPGA back end "
                        f"supports {', '.join(COMPUTE_OPS + ALIAS_OPS + HOST_OPS)}")


def _layer_estimate(n: ir.Node, s: _Shape, requested: int, has_uram: bool) -> LayerEstimate:
    p = max(1, min(int(requested), s.n))
    bram18 = uram = mem_lut = 0
    bits = {"weights": 0, "bias": 0, "state": 0, "buffer": 0}
    for role, total, word, rom in s.memories:
        bits[role] += total
        pl = place(Memory(role, total, p, word, rom), has_uram)
        bram18, uram, mem_lut = bram18 + pl.bram18, uram + pl.uram, mem_lut + pl.lut
    logic = LAYER_CONTROL_LUT + p * s.lane_lut
    text = s.text(p) + (f" (requested {requested}, capped at {s.n})" if requested > s.n else "")
    return LayerEstimate(
        node=n.name, op=n.op, parallelism=p, cycles_per_step=int(s.cycles_fn(p)), dsp=p * s.lane_dsp,
        bram36=ceil(bram18 / 2), uram=uram, lut=logic + mem_lut, ff=ceil(FF_PER_LUT * logic),
        weight_bits=bits["weights"] + bits["bias"], state_bits=bits["state"], buffer_bits=bits["buffer"],
        model=text + " [estimate]")


# ---------------------------------------------------------------------------------------------- design


class DesignModel:
    """The per-node layer models of one graph (built once; ``auto_parallelism`` reuses it)."""

    def __init__(self, qgraph: ir.Graph, part: FpgaPart, steps: Optional[int] = None):
        fmt = qgraph.metadata.get("fixed_point_format")
        if fmt not in (None, fx.FORMAT_NAME):
            raise EstimateError(f"the graph is quantized for {fmt!r}, not {fx.FORMAT_NAME!r}: quantize it with "
                                "quantize-fpga (step_deploy.passes.quantize_fpga) before estimating FPGA resources")
        try:
            tt = tensor_types(qgraph)
        except UnsupportedForFpga as e:
            raise EstimateError(f"{e}; it cannot be estimated for an FPGA") from None
        shapes = qgraph.infer_shapes()
        self.steps = int(steps or qgraph.metadata.get("time_steps") or 0)
        if self.steps <= 0:
            raise EstimateError("the graph records no time_steps; pass steps=T")
        self.part, self.has_uram = part, part.uram > 0
        windows = [int(n.block) for n in qgraph.nodes.values() if n.op == "TemporalBlockSum"]
        #: steps every buffer holds: the window ops' common block (block-major design), else 1
        self.block = math.lcm(*windows) if windows else 1
        self.shapes: dict[str, _Shape] = {}
        self.nodes: dict[str, ir.Node] = {}
        self.host: list[str] = []
        self.other: set[str] = set()
        for n in qgraph.topo_order():
            if n.op in PORT_OPS or n.op in ALIAS_OPS or n.op in HOST_OPS:
                self.other.add(n.name)
            if n.op in PORT_OPS or n.op in ALIAS_OPS:
                continue
            if n.op in HOST_OPS:
                self.host.append(n.name)
                continue
            self.nodes[n.name] = n
            self.shapes[n.name] = _layer_shape(n, shapes, tt, self.block)
        self._cache: dict[tuple[str, int], LayerEstimate] = {}

    def layer(self, name: str, p: int) -> LayerEstimate:
        key = (name, p)
        if key not in self._cache:
            self._cache[key] = _layer_estimate(self.nodes[name], self.shapes[name], p, self.has_uram)
        return self._cache[key]

    def layer_variant(self, name: str, p: int, memories: tuple) -> LayerEstimate:
        """The model of layer ``name`` at ``p`` with other ``memories`` (``(role, bits, word_bits, rom)``
        tuples, as ``shapes[name].memories``): what another schedule (the cycle simulator's time-step
        batching) changes, priced by the same rules."""
        return _layer_estimate(self.nodes[name], replace(self.shapes[name], memories=tuple(memories)), p,
                               self.has_uram)

    def resolve(self, parallelism) -> dict[str, int]:
        """``{node: P}`` for every compute node from None, an int or ``{node: P}`` (others 1)."""
        if parallelism is None:
            return {k: 1 for k in self.nodes}
        if isinstance(parallelism, bool) or parallelism == "auto":
            raise ParallelismError("parallelism 'auto' must be resolved with auto_parallelism() first")
        if isinstance(parallelism, Integral):
            return {k: positive(parallelism, "parallelism") for k in self.nodes}
        if isinstance(parallelism, Mapping):
            default = parallelism.get(DEFAULT_KEY, 1)
            if parallelism.get(AUTO_KEY) or default == "auto":
                raise ParallelismError("parallelism '...,auto' must be resolved with auto_parallelism() first")
            out = {k: positive(default, "parallelism *") for k in self.nodes}
            for k, v in parallelism.items():
                if k in (DEFAULT_KEY, AUTO_KEY):
                    continue
                self.check_node(k)
                out[k] = positive(v, f"parallelism of {k!r}")
            return out
        raise ParallelismError(f"parallelism must be None, a positive int or {{node: P}}, got {parallelism!r}")

    def check_node(self, k: str) -> None:
        if k in self.nodes:
            return
        import difflib

        near = difflib.get_close_matches(k, list(self.nodes), n=3)
        why = ("has no hardware of its own (it runs on the host, is a port or a reshape)" if k in self.other
               else "is not a node of this graph")
        names = ", ".join(list(self.nodes)[:8]) + (", ..." if len(self.nodes) > 8 else "")
        raise ParallelismError(f"--parallelism names {k!r}, which {why}"
                               + (f"; did you mean {', '.join(near)}?" if near else f"; compute nodes: {names}"))

    def design(self, clock_mhz: float, par: dict[str, int]) -> DesignEstimate:
        layers = tuple(self.layer(k, par.get(k, 1)) for k in self.nodes)
        return DesignEstimate(self.part, float(clock_mhz), self.steps, layers, tuple(self.host))


#: keys of a parallelism dict besides node names: ``"*"`` the default P of the nodes not named,
#: ``"auto"`` (True) "choose the nodes not named with auto_parallelism"
DEFAULT_KEY, AUTO_KEY = "*", "auto"


def positive(v, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, Integral) or v < 1:
        raise ParallelismError(f"{what} must be a positive integer, got {v!r}")
    return int(v)


def check_clock(clock_mhz) -> float:
    try:
        c = float(clock_mhz)
    except (TypeError, ValueError):
        c = float("nan")
    if not 0 < c < 2000:
        raise UsageError(f"--clock-mhz {clock_mhz!r}: expected a clock in MHz between 0 and 2000 (e.g. 200)")
    return c


__all__ = ["LayerEstimate", "DesignEstimate", "DesignModel", "FitError", "ParallelismError", "EstimateError",
           "step_cycles", "lif_lane_lut", "fit_message", "check_clock", "positive", "MODEL_RULES", "ESTIMATE_LABEL", "PIPELINE_DEPTH",
           "DESIGN_CONTROL_LUT", "DESIGN_CONTROL_FF", "LAYER_CONTROL_LUT", "FF_PER_LUT", "DEFAULT_KEY", "AUTO_KEY",
           "COMPUTE_OPS", "HOST_OPS", "PORT_OPS"]
