"""Custom Lava processes for what Loihi's neuro-cores (and lava-nc's process library) lack.

Every process here has a fixed-point CPU process model (``exporters/lava_models.py``, tag
``'fixed_pt'``, ``LoihiProtocol``) and runs with ``Loihi2SimCfg(select_tag='fixed_pt')``. On
real Loihi 2 these are jobs for the embedded x86 cores or the host (see DESIGN §2): Lava's
neuro-core library has no product of two live tensors, no max, no permutation.

**Flattening.** Every port carries a 1-D ``int32`` vector: the per-time-step tensor flattened
in row-major (C) order, ``x.reshape(-1)``; shapes are given as parameters and the outputs are
flattened the same way. Reshape and Flatten are therefore free (no process): connect the ports.

**Timing.** A process with latency 0 receives and sends in the same time step (receive, compute,
send): its output at step t depends on its inputs at step t. This is reliable in any graph
without cycles, since ``recv()`` blocks until the producer has sent in the same step. Lava's own
``Dense``/``Sparse`` send first and receive afterwards (latency 1, safe in loops); its
``LIF`` receives first (latency 0). ``RingBuffer`` source sends ``data[:, t]`` in step t (0-based)
and the sink stores step t's input in ``data[:, t]``, so an output column equals the reference at
column ``t - total latency of the path``. Measured for every process in the tests.

**Fan-in.** Lava's ``PyInPort`` (VEC_DENSE) *sums* everything connected to it. So an ``Add``
needs no process when its consumer is one of these processes, a ``FixedLIF``/``LIF``, a sink,
or a graded ``Dense``: connect all producers to the consumer's in port. (A binary ``Dense``,
``num_message_bits=0``, casts its summed input to bool: use a graded one.)

=================  ================================  ====================================  =======
process            ports (flattened int32 vectors)   parameters                            latency
=================  ================================  ====================================  =======
ElementwiseAdd     a_in (N,) <- all n producers;     shape, n_inputs                       0
                   s_out (N,)                        y = Σ_i x_i  (fan-in sum at a_in)
LiveMatMul         a_in (prod a_shape,),             a_shape, b_shape, transpose_a,        0
                   b_in (prod b_shape,),             transpose_b.  y = op(A) @ op(B),
                   s_out (prod out_shape,)           op = swap of the last two axes,
                                                     batched (numpy matmul broadcasting)
LiveMul            a_in, b_in, s_out                 a_shape, b_shape.  y = A ⊙ B with numpy   0
                                                     broadcasting; out_shape = broadcast
AxisSum            a_in (prod in_shape,), s_out      in_shape, axis, keepdim.  y = Σ_axis x    0
MaxPool2d          a_in (C·H·W,), s_out (C·Ho·Wo,)   in_shape (C,H,W), kernel, stride,         0
                                                     padding (padding never wins the max)
Permute            a_in, s_out (same size)           in_shape, perm.  y = x.transpose(perm)    0
FixedLIF           a_in (N,) graded int32;           shape, du, dv, vth, bias_mant, bias_exp,  0
                   s_out (N,) 0/1, 0..max_level      compare '>'|'>=', reset, fire, max_level,
                   (fire='round'), or v (graded)     round_d, graded, u, v.  Lava's
                                                     PyLifModelBitAcc arithmetic (below)
Accumulator        a_in (N,); s_out (N,) running     shape.  total[t] = Σ_{k<=t} x[k];         0
                   total; Var ``total``              ``total.get()`` before ``stop()``
Delay              a_in (N,), s_out (N,)             shape, steps.  y[t] = x[t - steps]        steps
                                                     (zeros before); for delay balancing
LiveReLU           a_in (N,), s_out (N,)             shape.  y = max(x, 0)                     0
Shiftmax           a_in, s_out (prod in_shape,)      in_shape, axis, frac_bits.  integer       0
                                                     Shiftmax of integer scores (contract §2)
BlockSum           a_in (N,), s_out (N,)             shape, block, offset.  STAtten's          block-1
                                                     TemporalBlockSum streamed: sums each
                                                     block of ``block`` golden steps, sends
                                                     Y[t] in step t + offset + block - 1
=================  ================================  ====================================  =======

Outputs are computed in int64 and must fit int32, else the run fails (``OverflowError`` in the
model, see Errors; no silent wrap). ``out_shape`` of each process is available as ``proc.out_shape``.

**FixedLIF** (per step, all integer; identical to lava-nc 0.10.0 ``PyLifModelBitAcc`` for
``compare='>'``, verified in the tests)::

    u = trunc0(u·(4096-(du+1)) / 4096) + (a_in << 6); u wraps once at ±2^23   (current)
    v = trunc0(v·(4096-dv) / 4096) + u + (bias_mant << bias_exp)             (voltage)
    v = clip(v, -(2^23-1), 2^23-1)
    s = v > (vth << 6)     (or v >= (vth << 6) with compare='>=', Loihi 2 microcode only)
    v[s] = 0               (u is not reset)

Loihi 2 microcode only (``fixedpoint.loihi.LoihiLIF``, θ = vth << 6): ``fire='round'`` (STEP's ILIF)
sends the integer ``s = clamp(rne_div(v, θ), 0, max_level)`` as a graded spike (round half to even,
exact integer division); ``fire='round_normalized'`` (NILIF) fires ``s = 2v > round_d·θ``;
``fire='ternary'`` sends ``+1`` at ``v >= θ`` and ``-1`` at ``v <= -θ`` (strict with ``compare='>'``)
as a signed graded spike; ``reset='soft'`` keeps ``v - s·θ`` instead of 0 (``reset='hard'``: 0
where ``s != 0``).

``trunc0`` rounds toward zero; ``bias_exp < 0`` shifts right. ``du``, ``dv`` are shared (12-bit);
``vth``, ``bias_mant``, ``bias_exp`` may be per neuron (Lava's ``LIF`` has one shared ``vth``).
``a_in`` is graded int32 (Lava's LIF declares int16 but accepts what its producer sends); Lava
computes ``a_in << 6`` in int32, so parity holds while ``|a_in| < 2^25``. Lava's current wrap is
a single ±2^24 correction, not a modulo; it is copied as is. With ``graded=True`` the spike
payload is the pre-reset voltage ``v`` (state units, i.e. ``<< 6``) of the spiking neurons.

**Graded Dense.** ``lava.proc.dense.Dense(weights, num_message_bits=k>0)`` (and ``Sparse``)
accepts graded integer input correctly in fixed_pt: ``a_out = (W @ s_in) << weight_exp``
(``>>``, floor, when negative), latency 1; checked in the tests, so no custom process is needed.
Weights are clipped to [-256, 255] (mixed sign) / [0, 255], and with mixed signs and
``num_weight_bits=8`` the LSB is dropped (``(w >> 1) << 1``: odd weights become even).
``num_message_bits=0`` treats the input as binary (``s_in.astype(bool)``).

**Errors.** A model that fails (e.g. ``OverflowError``) sends zeros, prints the cause to stderr
and raises; ``run()`` then raises ``RuntimeError: 1 Exception(s) occurred``. Stop such a run
with ``lava_harness.stop_runtime(proc, failed=True)``: lava's own ``stop()`` hangs after it.

**BlockSum** (a window op, non-causal inside its block: ``Y[t]`` needs the block's last input) runs
with a fixed latency of ``block - 1`` steps. ``offset`` is the Lava step at which its input's golden
step 0 arrives (``passes.delay_balance``'s latency of the input), so the process knows the golden step
``u = step - offset`` of each input and the block alignment; it sums the current block and keeps the
latest completed block's sum, which it sends every step (``lava_kernels.block_sum_step``). In step
``offset + t + block - 1`` that is ``Y[t]``: the block of ``t`` ends at or before input step ``t +
block - 1``. ``passes.delay_balance`` adds the ``block - 1`` steps to the node's latency, so every
branch meeting it downstream is delayed to match and the biases after it start later.

``LATENCY`` maps process-type names (ours and the Lava ones the exporter uses) to their latency
in steps; :func:`latency` also handles ``Delay`` and ``BlockSum`` instances. Related modules: ``lava_models``
(process models, registered with Lava's compiler on import), ``lava_kernels`` (the numpy
arithmetic, no lava needed), ``lava_harness`` (``run_open_loop``: sources → ports → sinks).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from .lava_compat import import_lava

import_lava()

from lava.magma.core.process.ports.ports import InPort, OutPort  # noqa: E402
from lava.magma.core.process.process import AbstractProcess  # noqa: E402
from lava.magma.core.process.variable import Var  # noqa: E402

Shape = tuple[int, ...]

LATENCY: dict[str, int] = {
    "ElementwiseAdd": 0, "LiveMatMul": 0, "LiveMul": 0, "AxisSum": 0, "MaxPool2d": 0,
    "Permute": 0, "FixedLIF": 0, "Accumulator": 0, "LiveReLU": 0, "Shiftmax": 0,
    # lava-nc's own processes, as measured in the tests
    "Dense": 1, "Sparse": 1, "LIF": 0,
}


def latency(proc) -> int:
    """Steps between a process's input and its output (``Delay``: its ``steps``)."""
    if isinstance(proc, Delay):
        return proc.steps
    if isinstance(proc, BlockSum):
        return proc.block - 1
    return LATENCY[type(proc).__name__]


def _shape(s) -> Shape:
    return (int(s),) if isinstance(s, (int, np.integer)) else tuple(int(d) for d in s)


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, (int, np.integer)) else (int(v[0]), int(v[1]))


def _size(shape: Shape) -> int:
    return int(math.prod(shape))


def matmul_out_shape(a_shape: Shape, b_shape: Shape, transpose_a: bool, transpose_b: bool) -> Shape:
    a, b = list(a_shape), list(b_shape)
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"LiveMatMul needs operands of rank >= 2, got {tuple(a)} and {tuple(b)}")
    if transpose_a:
        a[-1], a[-2] = a[-2], a[-1]
    if transpose_b:
        b[-1], b[-2] = b[-2], b[-1]
    if a[-1] != b[-2]:
        raise ValueError(f"LiveMatMul: cannot multiply {tuple(a)} by {tuple(b)}")
    return tuple(np.broadcast_shapes(tuple(a[:-2]), tuple(b[:-2]))) + (a[-2], b[-1])


def pool_out_shape(in_shape: Shape, kernel, stride, padding) -> Shape:
    c, h, w = in_shape
    (kh, kw), (sh, sw), (ph, pw) = _pair(kernel), _pair(stride), _pair(padding)
    if ph > kh // 2 or pw > kw // 2:
        raise ValueError(f"MaxPool2d: padding {padding} must be at most half the kernel {kernel}")
    return (c, (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1)


class _StepProcess(AbstractProcess):
    """Base of the processes here: parameters are checked before ``AbstractProcess.__init__``;
    an instance rejected there must not fail again in lava's ``__del__``."""

    def __del__(self):
        if "_runtime" in self.__dict__:
            super().__del__()


class _UnaryProcess(_StepProcess):
    """One flattened input ``a_in`` and one flattened output ``s_out``."""

    def _ports(self, in_size: int, out_shape: Shape) -> None:
        self.out_shape = out_shape
        self.a_in = InPort(shape=(in_size,))
        self.s_out = OutPort(shape=(_size(out_shape),))


class ElementwiseAdd(_UnaryProcess):
    """``y = Σ_i x_i``: connect all ``n_inputs`` producers to ``a_in`` (Lava sums fan-in)."""

    def __init__(self, shape, n_inputs: int = 2, name: str | None = None):
        shape = _shape(shape)
        super().__init__(shape=shape, n_inputs=int(n_inputs), name=name)
        self.n_inputs = int(n_inputs)
        self._ports(_size(shape), shape)


class LiveMatMul(_StepProcess):
    """``y = op(A) @ op(B)`` of two live integer tensors (AND + popcount on spikes)."""

    def __init__(self, a_shape, b_shape, transpose_a: bool = False, transpose_b: bool = False,
                 name: str | None = None):
        a_shape, b_shape = _shape(a_shape), _shape(b_shape)
        out_shape = matmul_out_shape(a_shape, b_shape, transpose_a, transpose_b)
        super().__init__(a_shape=a_shape, b_shape=b_shape, transpose_a=bool(transpose_a),
                         transpose_b=bool(transpose_b), out_shape=out_shape, name=name)
        self.out_shape = out_shape
        self.a_in = InPort(shape=(_size(a_shape),))
        self.b_in = InPort(shape=(_size(b_shape),))
        self.s_out = OutPort(shape=(_size(out_shape),))


class LiveMul(_StepProcess):
    """``y = A ⊙ B`` with numpy broadcasting (AND on spikes)."""

    def __init__(self, a_shape, b_shape, name: str | None = None):
        a_shape, b_shape = _shape(a_shape), _shape(b_shape)
        out_shape = tuple(np.broadcast_shapes(a_shape, b_shape))
        super().__init__(a_shape=a_shape, b_shape=b_shape, out_shape=out_shape, name=name)
        self.out_shape = out_shape
        self.a_in = InPort(shape=(_size(a_shape),))
        self.b_in = InPort(shape=(_size(b_shape),))
        self.s_out = OutPort(shape=(_size(out_shape),))


class AxisSum(_UnaryProcess):
    """``y = Σ_axis x`` (``keepdim`` keeps the axis with size 1)."""

    def __init__(self, in_shape, axis: int, keepdim: bool = False, name: str | None = None):
        in_shape = _shape(in_shape)
        ax = int(axis) % len(in_shape)
        out_shape = tuple(1 if i == ax else d for i, d in enumerate(in_shape)) if keepdim \
            else tuple(d for i, d in enumerate(in_shape) if i != ax)
        super().__init__(in_shape=in_shape, axis=ax, keepdim=bool(keepdim), out_shape=out_shape,
                         name=name)
        self._ports(_size(in_shape), out_shape)


class MaxPool2d(_UnaryProcess):
    """Max over ``kernel`` windows of a ``(C, H, W)`` map (OR on spikes)."""

    def __init__(self, in_shape, kernel=2, stride=None, padding=0, name: str | None = None):
        in_shape = _shape(in_shape)
        kernel = _pair(kernel)
        stride = kernel if stride is None else _pair(stride)
        padding = _pair(padding)
        out_shape = pool_out_shape(in_shape, kernel, stride, padding)
        super().__init__(in_shape=in_shape, kernel=kernel, stride=stride, padding=padding,
                         out_shape=out_shape, name=name)
        self._ports(_size(in_shape), out_shape)


class Permute(_UnaryProcess):
    """``y = x.transpose(perm)`` of the unflattened tensor (Transpose)."""

    def __init__(self, in_shape, perm: Sequence[int], name: str | None = None):
        in_shape, perm = _shape(in_shape), tuple(int(p) for p in perm)
        if sorted(perm) != list(range(len(in_shape))):
            raise ValueError(f"Permute: perm {perm} does not fit rank {len(in_shape)}")
        out_shape = tuple(in_shape[p] for p in perm)
        super().__init__(in_shape=in_shape, perm=perm, out_shape=out_shape, name=name)
        self._ports(_size(in_shape), out_shape)


class LiveReLU(_UnaryProcess):
    """``y = max(x, 0)`` of a graded integer vector (A²OS²A's K; embedded cores)."""

    def __init__(self, shape, name: str | None = None):
        shape = _shape(shape)
        super().__init__(shape=shape, name=name)
        self._ports(_size(shape), shape)


class Shiftmax(_UnaryProcess):
    """Integer Shiftmax over ``axis`` of integer scores (``lava_kernels.shiftmax_kernel``; embedded
    cores): ``y = 2^(F + Δ) << (F + L - E)``, the float Shiftmax times ``2^(F + L)``."""

    def __init__(self, in_shape, axis: int = -1, frac_bits: int = 16, name: str | None = None):
        in_shape = _shape(in_shape)
        ax = int(axis) % len(in_shape)
        if not 0 <= int(frac_bits) <= 30:
            raise ValueError(f"Shiftmax: frac_bits={frac_bits} must be in 0..30")
        super().__init__(in_shape=in_shape, axis=ax, frac_bits=int(frac_bits), name=name)
        self._ports(_size(in_shape), in_shape)


def _per_neuron(value, n: int) -> np.ndarray:
    return np.broadcast_to(np.asarray(value, dtype=np.int64), (n,)).astype(np.int32)


class FixedLIF(_UnaryProcess):
    """Loihi fixed-point LIF (Lava's ``PyLifModelBitAcc`` arithmetic) with a choice of ``>``
    or ``>=`` at the threshold; see the module docstring for the equations."""

    def __init__(self, shape, du: int = 0, dv: int = 0, vth=10, bias_mant=0, bias_exp=0,
                 compare: str = ">", graded: bool = False, u=0, v=0, reset: str = "hard",
                 fire: str = "threshold", max_level: int = 1, round_d: int = 0, name: str | None = None):
        shape = _shape(shape)
        n = _size(shape)
        if compare not in (">", ">="):
            raise ValueError(f"FixedLIF: compare must be '>' or '>=', got {compare!r}")
        if reset not in ("hard", "soft"):
            raise ValueError(f"FixedLIF: reset must be 'hard' or 'soft', got {reset!r}")
        if fire not in ("threshold", "round", "round_normalized", "ternary"):
            raise ValueError(f"FixedLIF: fire must be 'threshold', 'round', 'round_normalized' or 'ternary', "
                             f"got {fire!r}")
        if fire != "threshold" and np.min(vth) < 1:
            raise ValueError(f"FixedLIF: fire={fire!r} divides by the threshold: vth must be >= 1")
        if fire == "round_normalized" and int(round_d) < 1:
            raise ValueError(f"FixedLIF: fire='round_normalized' needs round_d >= 1, got {round_d}")
        for what, d in (("du", du), ("dv", dv)):
            if not 0 <= int(d) <= 4095:
                raise ValueError(f"FixedLIF: {what}={d} is not a 12-bit decay (0..4095)")
        super().__init__(shape=shape, compare=compare, graded=bool(graded), reset=reset, fire=fire,
                         max_level=int(max_level) if fire == "round" else 1, round_d=int(round_d), name=name)
        self.compare, self.graded, self.reset, self.fire = compare, bool(graded), reset, fire
        self._ports(n, shape)
        self.u = Var(shape=(n,), init=_per_neuron(u, n))
        self.v = Var(shape=(n,), init=_per_neuron(v, n))
        self.du = Var(shape=(1,), init=int(du))
        self.dv = Var(shape=(1,), init=int(dv))
        self.vth = Var(shape=(n,), init=_per_neuron(vth, n))
        self.bias_mant = Var(shape=(n,), init=_per_neuron(bias_mant, n))
        self.bias_exp = Var(shape=(n,), init=_per_neuron(bias_exp, n))


class Accumulator(_UnaryProcess):
    """Readout: ``total += x`` every step; ``s_out`` sends the running total."""

    def __init__(self, shape, name: str | None = None):
        shape = _shape(shape)
        super().__init__(shape=shape, name=name)
        self._ports(_size(shape), shape)
        self.total = Var(shape=(_size(shape),), init=np.zeros(_size(shape), np.int32))


class Delay(_UnaryProcess):
    """``y[t] = x[t - steps]`` (zeros for the first ``steps`` steps): delay balancing."""

    def __init__(self, shape, steps: int, name: str | None = None):
        shape = _shape(shape)
        if int(steps) < 0:
            raise ValueError(f"Delay: steps must be >= 0, got {steps}")
        super().__init__(shape=shape, steps=int(steps), name=name)
        self.steps = int(steps)
        self._ports(_size(shape), shape)


class BlockSum(_UnaryProcess):
    """STAtten's ``TemporalBlockSum`` streamed (embedded cores): ``y`` in Lava step ``offset + t +
    block - 1`` is the sum of the input's golden steps in the block of ``t`` (blocks of ``block`` steps
    aligned at golden step 0, which arrives in Lava step ``offset``); latency ``block - 1``."""

    def __init__(self, shape, block: int = 2, offset: int = 0, name: str | None = None):
        shape = _shape(shape)
        if int(block) < 1:
            raise ValueError(f"BlockSum: block={block} must be >= 1")
        if int(offset) < 0:
            raise ValueError(f"BlockSum: offset={offset} must be >= 0")
        super().__init__(shape=shape, block=int(block), offset=int(offset), name=name)
        self.block, self.offset = int(block), int(offset)
        self._ports(_size(shape), shape)


PROCESSES = (ElementwiseAdd, LiveMatMul, LiveMul, AxisSum, MaxPool2d, Permute, FixedLIF,
             Accumulator, Delay, LiveReLU, Shiftmax, BlockSum)

__all__ = [p.__name__ for p in PROCESSES] + ["LATENCY", "latency", "matmul_out_shape",
                                              "pool_out_shape", "PROCESSES"]
