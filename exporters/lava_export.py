"""Lava export: the quantized IR (``passes.quantize_loihi``) as a Lava process graph.

Thin by design (Lava is archived; all logic lives in the core): each IR node becomes at most one
process, every port carries the node's per-step tensor flattened row-major (int32):

==================  =========================================================================
IR node             Lava
==================  =========================================================================
Input/QuantizeInput ``RingBuffer`` source of integers (analog input quantized on the host;
                    graded spikes for the first layer)
FixedLinear         ``Sparse`` (``kron(I, W)`` over the leading axes), ``weight_exp``; graded
FixedConv2d/1d      input (``num_message_bits=24``) unless the input is binary spikes; the
                    convolution unrolled into a sparse matrix (Lava's ``Conv`` ignores
                    ``weight_exp`` in fixed_pt). Bias: a ``RingBuffer`` of the bias vector that is
                    zero until the data arrives (``schedule.latency``), summed at the consumer
LoihiLIF            ``lava.proc.lif.LIF`` for the stock neuron (``>``, hard reset, 0/1 spikes),
                    else the custom ``FixedLIF`` (``>=``, soft reset, ILIF/NILIF: Loihi 2
                    microcode); ILIF's integer spikes travel as graded spikes (24-bit Sparse input)
Add                 ``ElementwiseAdd``          Mul, MatMul   ``LiveMul``, ``LiveMatMul``
Sum                 ``AxisSum``                 MaxPool2d     ``MaxPool2d``
Transpose           ``Permute``                 Reshape/Flatten  nothing (same port)
Delay               ``Delay``                   TemporalSum   ``Accumulator``
ReLU                ``LiveReLU``                Shiftmax      ``Shiftmax`` (embedded cores)
TemporalBlockSum    ``BlockSum`` (embedded cores): a window op, non-causal inside its block of B
                    steps, streamed with a latency of B - 1 steps (it emits Y[t] once the block's
                    last input arrived; ``passes.delay_balance`` counts the B - 1 steps, so the
                    branches meeting it downstream are delayed to match); T must be a multiple of B
==================  =========================================================================

A ternary ``LoihiLIF`` (``fire='ternary'``) is a ``FixedLIF`` whose -1/0/+1 spikes travel as signed
graded payloads (its Sparse consumers read 24-bit messages, not the binary 1-bit event).

Edges whose producer runs ahead get a ``Delay`` process (``passes.delay_balance``), so each
process sees one golden time step at a time. The unrolled matrices grow with the feature maps
(a conv on an HxW map has HxW times its kernel's nonzeros): fine for the digits models, heavy
for CIFAR-sized stems.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import scipy.sparse as sp

from step_deploy import ir
from step_deploy.fixedpoint import loihi as fx
from step_deploy.ir.attention_nodes import WINDOW_OPS
from step_deploy.passes.delay_balance import Schedule, schedule
from .lava_compat import import_lava

GRADED_BITS = 24
#: ops whose output is binary spikes (a binary Dense/Sparse reads them: num_message_bits = 0)
_BINARY_OPS = ("LoihiLIF",)
_BINARY_KEEP = ("MaxPool2d", "Transpose", "Reshape", "Flatten", "Delay", "Mul")


def binary_nodes(qgraph: ir.Graph) -> set[str]:
    """Nodes whose values are always 0/1 (spikes and layout/AND/OR of spikes)."""
    out = set()
    for n in qgraph.topo_order():
        spikes_in = n.op == "Input" and n.kind == "spikes"
        spiking = (n.op in _BINARY_OPS and int(getattr(n, "max_level", 1)) == 1  # ILIF: graded 0..max_level
                   and getattr(n, "fire", "threshold") != "ternary")  # ternary: signed graded -1/0/+1
        if spikes_in or spiking or (n.op in _BINARY_KEEP and all(i in out for i in n.inputs)):
            out.add(n.name)
    return out


def synapse_matrix(node, in_shape: tuple[int, ...], chunk: int = 512) -> sp.csr_matrix:
    """The flattened (row-major) linear map of a fixed synapse without bias and exponent:
    ``A.reshape(-1) = M @ X.reshape(-1)`` with integer mantissas in ``M``."""
    w = np.asarray(node.weight)
    if node.op == "FixedLinear":
        lead = int(math.prod(in_shape[:-1]))
        return sp.kron(sp.identity(lead, dtype=np.int64, format="csr"), sp.csr_matrix(w.astype(np.int64)),
                       format="csr")
    import torch  # only here: the Lava run itself stays free of torch (see lava_record)

    n_in = int(math.prod(in_shape))
    wt = torch.from_numpy(w.astype(np.float64))
    cols = []
    for start in range(0, n_in, chunk):
        stop = min(n_in, start + chunk)
        eye = torch.zeros(stop - start, n_in, dtype=torch.float64)
        eye[torch.arange(stop - start), torch.arange(start, stop)] = 1.0
        x = eye.reshape(stop - start, *in_shape)
        if node.op == "FixedConv2d":
            y = torch.nn.functional.conv2d(x, wt, None, tuple(node.stride), tuple(node.padding),
                                           tuple(node.dilation), node.groups)
        else:
            y = torch.nn.functional.conv1d(x, wt, None, node.stride, node.padding, node.dilation, node.groups)
        cols.append(sp.csr_matrix(torch.round(y.reshape(stop - start, -1)).to(torch.int64).numpy()))
    return sp.vstack(cols, format="csr").T.tocsr()


def bias_vector(node, out_shape: tuple[int, ...]) -> Optional[np.ndarray]:
    """The synapse's bias broadcast over its output and flattened (None without a bias)."""
    b = node.effective_bias()
    if b is None:
        return None
    axis = len(out_shape) - 1 if node.op == "FixedLinear" else 0
    shape = [1] * len(out_shape)
    shape[axis] = -1
    return np.broadcast_to(b.reshape(shape), out_shape).reshape(-1).astype(np.int64)


@dataclass
class LavaNetwork:
    """A built (not yet run) Lava network for one sample."""

    qgraph: ir.Graph
    schedule: Schedule
    steps: int
    num_steps: int
    ports: dict = field(default_factory=dict)
    sinks: dict = field(default_factory=dict)
    processes: list = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for p in self.processes:
            out[type(p).__name__] = out.get(type(p).__name__, 0) + 1
        return dict(sorted(out.items()))


class _Builder:
    def __init__(self, qgraph: ir.Graph, steps: int, sched: Schedule, matrices: dict):
        import_lava()
        from . import lava_models  # noqa: F401  (the processes' fixed_pt models, registered with Lava)
        from . import lava_processes as lp

        self.lp, self.q, self.sched, self.matrices = lp, qgraph, sched, matrices
        self.shapes = qgraph.infer_shapes()
        self.binary = binary_nodes(qgraph)
        self.net = LavaNetwork(qgraph, sched, steps, sched.lava_steps(steps))
        self._delayed: dict = {}

    def keep(self, proc):
        self.net.processes.append(proc)
        return proc

    def source(self, data_tn: np.ndarray, name: str):
        """RingBuffer sending column t in Lava step t; ``data_tn`` is (num_steps, N)."""
        from lava.proc.io.source import RingBuffer

        return self.keep(RingBuffer(data=np.ascontiguousarray(data_tn.T.astype(np.int32)))).s_out

    def connect(self, consumer: str, index: int, in_port) -> None:
        """Connect the (balanced) ports of ``consumer``'s input ``index`` to ``in_port``."""
        src = self.q[consumer].inputs[index]
        k = self.sched.delays.get((consumer, index), 0)
        for port in self.delayed(src, k):
            port.connect(in_port)

    def delayed(self, src: str, k: int) -> list:
        if k == 0:
            return self.net.ports[src]
        if (src, k) not in self._delayed:
            d = self.keep(self.lp.Delay(int(math.prod(self.shapes[src])), steps=k, name=f"{src}.delay{k}"))
            for port in self.net.ports[src]:
                port.connect(d.a_in)
            self._delayed[(src, k)] = [d.s_out]
        return self._delayed[(src, k)]

    def node(self, n, inputs: dict) -> None:
        lp, shp, net = self.lp, self.shapes, self.net
        size = int(math.prod(shp[n.name]))
        in_shapes = [shp[i] for i in n.inputs]
        if n.op == "Input" or n.op == "QuantizeInput":
            if n.name in inputs:
                data = np.zeros((net.num_steps, size), np.int64)
                x = np.asarray(inputs[n.name]).reshape(-1, size)
                data[: x.shape[0]] = x
                net.ports[n.name] = [self.source(data, n.name)]
            return
        if n.op in ("Reshape", "Flatten"):
            net.ports[n.name] = list(self.net.ports[n.inputs[0]])
            return
        if n.op == "Output":
            net.ports[n.name] = list(self.net.ports[n.inputs[0]])
            return
        if isinstance(n, fx.FIXED_SYNAPSES):
            from lava.proc.sparse.process import Sparse

            if n.name not in self.matrices:
                self.matrices[n.name] = synapse_matrix(n, in_shapes[0])
            bits = 0 if n.inputs[0] in self.binary else GRADED_BITS
            proc = self.keep(Sparse(weights=self.matrices[n.name].astype(np.int32), weight_exp=int(n.weight_exp),
                                    num_message_bits=bits, name=n.name))
            self.connect(n.name, 0, proc.s_in)
            ports = [proc.a_out]
            b = bias_vector(n, shp[n.name])
            if b is not None:
                data = np.zeros((net.num_steps, size), np.int64)
                data[self.sched.latency[n.name]:] = b
                ports.append(self.source(data, f"{n.name}.bias"))
            net.ports[n.name] = ports
            return
        # a window op's process needs the Lava step of its input's golden step 0 (its block alignment)
        kw = {"offset": self.sched.latency[n.inputs[0]]} if n.op in WINDOW_OPS else {}
        proc = PROCESS_BUILDERS[n.op](lp, n, in_shapes, size, **kw)
        self.keep(proc)
        in_ports = [proc.a_in, proc.b_in] if n.op in ("Mul", "MatMul") else [proc.a_in] * len(n.inputs)
        for k, port in enumerate(in_ports):
            self.connect(n.name, k, port)
        net.ports[n.name] = [proc.s_out]


def _lif(lp, n, in_shapes, size):
    if n.stock:
        from lava.proc.lif.process import LIF

        return LIF(shape=(size,), du=int(n.du), dv=int(n.dv), vth=int(n.vth), bias_mant=0, bias_exp=0, name=n.name)
    return lp.FixedLIF(size, du=int(n.du), dv=int(n.dv), vth=int(n.vth), compare=n.compare, reset=n.reset,
                       fire=n.fire, max_level=int(n.max_level), round_d=int(n.round_d), name=n.name)


def _matmul(lp, n, in_shapes, size):
    if n.scale != 1.0:
        raise ValueError(f"{n.name}: MatMul scale {n.scale} in a quantized graph")
    return lp.LiveMatMul(in_shapes[0], in_shapes[1], n.transpose_a, n.transpose_b, name=n.name)


#: op -> ``f(lava_processes, node, input shapes, size)`` building its Lava process (one in, one out port);
#: a window op's builder also takes ``offset``, the Lava step at which its input's golden step 0 arrives
PROCESS_BUILDERS = {
    "LoihiLIF": _lif,
    "Add": lambda lp, n, s, size: lp.ElementwiseAdd(size, n_inputs=len(n.inputs), name=n.name),
    "Mul": lambda lp, n, s, size: lp.LiveMul(s[0], s[1], name=n.name),
    "MatMul": _matmul,
    "Sum": lambda lp, n, s, size: lp.AxisSum(s[0], n.axis, n.keepdim, name=n.name),
    "MaxPool2d": lambda lp, n, s, size: lp.MaxPool2d(s[0], n.kernel_size, n.stride, n.padding, name=n.name),
    "Transpose": lambda lp, n, s, size: lp.Permute(s[0], n.perm, name=n.name),
    "Delay": lambda lp, n, s, size: lp.Delay(size, steps=int(n.steps), name=n.name),
    "TemporalSum": lambda lp, n, s, size: lp.Accumulator(size, name=n.name),
    "ReLU": lambda lp, n, s, size: lp.LiveReLU(size, name=n.name),
    "Shiftmax": lambda lp, n, s, size: lp.Shiftmax(s[0], n.axis, int(n.frac_bits), name=n.name),
    "TemporalBlockSum": lambda lp, n, s, size, offset=0: lp.BlockSum(size, int(n.block), int(offset), name=n.name),
}
#: ops that are wiring, not processes: sources (host data), layout views and outputs
WIRED_OPS = ("Input", "QuantizeInput", "Reshape", "Flatten", "Output")
#: the backend's op set (synapses become Lava ``Sparse`` processes)
LAVA_BACKEND = ir.register_backend(
    "lava", set(WIRED_OPS) | {c.__name__ for c in fx.FIXED_SYNAPSES} | set(PROCESS_BUILDERS), kind="integer",
    where="exporters/lava_export.py",
    hint=f"Lava runs {fx.FORMAT_NAME} graphs: quantize with passes.quantize_loihi first")


def check_lava(qgraph: ir.Graph, steps: int) -> None:
    """What Lava refuses before anything is built: an op it has no process for, a window op whose
    blocks would straddle the end of a ``steps``-step run."""
    ir.require_ops(qgraph, LAVA_BACKEND)
    for n in qgraph.topo_order():
        if n.op in WINDOW_OPS:
            n.check_steps(int(steps))  # a block must not straddle the end of the run


def synapse_matrices(qgraph: ir.Graph, matrices: Optional[dict] = None) -> dict:
    """Every synapse's unrolled matrix (:func:`synapse_matrix`) by node name, added to ``matrices``
    (the ones already there are kept)."""
    matrices = {} if matrices is None else matrices
    shapes = qgraph.infer_shapes()
    for n in qgraph.topo_order():
        if isinstance(n, fx.FIXED_SYNAPSES) and n.name not in matrices:
            matrices[n.name] = synapse_matrix(n, shapes[n.inputs[0]])
    return matrices


def build_lava(qgraph: ir.Graph, inputs: dict, steps: int, matrices: Optional[dict] = None) -> LavaNetwork:
    """Build the Lava network for one sample (no sinks: ``exporters.lava_runner`` attaches them
    to ``net.ports[node]``; connect every port of the list, their sum is the node's value).

    ``inputs``: ``{node: (T, *shape) integer array}`` for every graph input, or for its
    ``QuantizeInput`` (the host-side quantized analog input). ``matrices``: a cache of unrolled
    synapse matrices (reuse it across samples)."""
    check_lava(qgraph, steps)
    b = _Builder(qgraph, int(steps), schedule(qgraph), {} if matrices is None else matrices)
    for n in qgraph.topo_order():
        b.node(n, inputs)
    return b.net


__all__ = ["LavaNetwork", "build_lava", "check_lava", "synapse_matrices", "LAVA_BACKEND", "PROCESS_BUILDERS",
           "WIRED_OPS", "synapse_matrix", "bias_vector", "binary_nodes", "GRADED_BITS"]
