"""Fixed-point CPU process models (tag ``'fixed_pt'``) for ``exporters/lava_processes.py``.

Each model is ``receive → compute → send`` in the spiking phase (latency 0), except ``Delay``.
The arithmetic lives in plain numpy functions (``*_kernel``, :func:`lif_fixed_step`) so that it
can be read and tested without Lava. Imported by ``lava_processes`` (which registers the models
with Lava's compiler through ``lava_compat.register_process_models``).
"""
from __future__ import annotations

import sys
from collections import deque

import numpy as np

from step_deploy.simulators.lava_compat import register_process_models

from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

from .lava_processes import (Accumulator, AxisSum, Delay, ElementwiseAdd, FixedLIF, LiveMatMul,
                             LiveMul, MaxPool2d, Permute)

_I32 = np.iinfo(np.int32)


def to_int32(y: np.ndarray, who: str) -> np.ndarray:
    """Flatten ``y`` (int64) to an int32 vector; an out-of-range value is an error, not a wrap."""
    y = np.asarray(y, dtype=np.int64).reshape(-1)
    if y.size and (y.max() > _I32.max or y.min() < _I32.min):
        raise OverflowError(f"{who}: output {int(np.abs(y).max())} does not fit int32")
    return y.astype(np.int32)


# --------------------------------------------------------------------------- kernels (numpy)


def _swap_last(x: np.ndarray, flag: bool) -> np.ndarray:
    return np.swapaxes(x, -1, -2) if flag else x


def matmul_kernel(a, b, a_shape, b_shape, transpose_a=False, transpose_b=False) -> np.ndarray:
    a = np.asarray(a, np.int64).reshape(a_shape)
    b = np.asarray(b, np.int64).reshape(b_shape)
    return np.matmul(_swap_last(a, transpose_a), _swap_last(b, transpose_b))


def mul_kernel(a, b, a_shape, b_shape) -> np.ndarray:
    return np.asarray(a, np.int64).reshape(a_shape) * np.asarray(b, np.int64).reshape(b_shape)


def axis_sum_kernel(x, in_shape, axis, keepdim=False) -> np.ndarray:
    return np.asarray(x, np.int64).reshape(in_shape).sum(axis=axis, keepdims=keepdim)


def maxpool_kernel(x, in_shape, kernel, stride, padding) -> np.ndarray:
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    x = np.asarray(x, np.int64).reshape(in_shape)
    c, h, w = in_shape
    lo = np.iinfo(np.int64).min
    xp = np.pad(x, ((0, 0), (ph, ph), (pw, pw)), constant_values=lo)
    ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    out = np.full((c, ho, wo), lo, dtype=np.int64)
    for dy in range(kh):
        for dx in range(kw):
            out = np.maximum(out, xp[:, dy:dy + sh * (ho - 1) + 1:sh, dx:dx + sw * (wo - 1) + 1:sw])
    return out


def permute_kernel(x, in_shape, perm) -> np.ndarray:
    return np.asarray(x, np.int64).reshape(in_shape).transpose(perm)


def _trunc_decay(x: np.ndarray, keep: int) -> np.ndarray:
    """``x·keep / 4096`` rounded toward zero (Lava: ``sign(p)·(|p| >> 12)``)."""
    p = x.astype(np.int64) * int(keep)
    return np.sign(p) * (np.abs(p) >> 12)


def lif_fixed_step(u, v, a_in, du, dv, vth, bias_mant, bias_exp, compare=">"):
    """One step of Lava's ``PyLifModelBitAcc`` (plus ``>=``). Returns ``(u, v, spikes, v_pre)``
    as int64 arrays; ``v`` is after the reset, ``v_pre`` before it."""
    max_uv = 1 << 23
    bias_mant = np.asarray(bias_mant, np.int64)
    bias_exp = np.asarray(bias_exp, np.int64)
    bias = np.where(bias_exp >= 0, bias_mant << np.maximum(bias_exp, 0),
                    bias_mant >> np.maximum(-bias_exp, 0))
    u = _trunc_decay(np.asarray(u), 4096 - (int(du) + 1)) + (np.asarray(a_in, np.int64) << 6)
    wrapped = np.where(u > max_uv, u - 2 * max_uv, u)
    u = np.where(wrapped <= -max_uv, u + 2 * max_uv, wrapped)
    v = _trunc_decay(np.asarray(v), 4096 - int(dv)) + u + bias
    v = np.clip(v, -max_uv + 1, max_uv - 1)
    thr = np.asarray(vth, np.int64) << 6
    s = v >= thr if compare == ">=" else v > thr
    return u, np.where(s, 0, v), s, v


# --------------------------------------------------------------------------- process models

_IN = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=32)
_OUT = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=32)


class _SafeModel(PyLoihiProcessModel):
    """``run_spk`` = receive, ``compute``, send. If ``compute`` raises, zeros are sent first so
    that downstream processes blocked in ``recv()`` finish the step; otherwise Lava's runtime
    waits for them forever (a hang, not an error). Lava then stops the run with ``RuntimeError:
    1 Exception(s) occurred``; the cause is written to stderr (Lava only logs it at INFO)."""

    def receive(self) -> tuple:
        return (self.a_in.recv(),)

    def compute(self, *inputs) -> np.ndarray:  # pragma: no cover - overridden
        raise NotImplementedError

    def run_spk(self):
        inputs = self.receive()
        try:
            out = self.compute(*inputs)
        except Exception as e:
            self.s_out.send(np.zeros(self.s_out._shape, np.int32))
            print(f"step_deploy lava process model {type(self).__name__} failed at step "
                  f"{self.time_step}: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
            raise
        self.s_out.send(out)


def _fixed(proc):
    """Decorators shared by every model: implements ``proc`` on CPU, tag ``fixed_pt``."""
    def wrap(cls):
        cls = tag("fixed_pt")(requires(CPU)(implements(proc=proc, protocol=LoihiProtocol)(cls)))
        register_process_models(proc, cls)
        return cls
    return wrap


@_fixed(ElementwiseAdd)
class PyElementwiseAddModel(_SafeModel):
    a_in: PyInPort = _IN
    s_out: PyOutPort = _OUT

    def compute(self, x):
        return to_int32(x, "ElementwiseAdd")


class _BinaryModel(_SafeModel):
    a_in: PyInPort = _IN
    b_in: PyInPort = _IN
    s_out: PyOutPort = _OUT

    def receive(self) -> tuple:
        return self.a_in.recv(), self.b_in.recv()


@_fixed(LiveMatMul)
class PyLiveMatMulModel(_BinaryModel):
    def compute(self, a, b):
        p = self.proc_params
        y = matmul_kernel(a, b, p["a_shape"], p["b_shape"], p["transpose_a"], p["transpose_b"])
        return to_int32(y, "LiveMatMul")


@_fixed(LiveMul)
class PyLiveMulModel(_BinaryModel):
    def compute(self, a, b):
        p = self.proc_params
        return to_int32(mul_kernel(a, b, p["a_shape"], p["b_shape"]), "LiveMul")


@_fixed(AxisSum)
class PyAxisSumModel(_SafeModel):
    a_in: PyInPort = _IN
    s_out: PyOutPort = _OUT

    def compute(self, x):
        p = self.proc_params
        return to_int32(axis_sum_kernel(x, p["in_shape"], p["axis"], p["keepdim"]), "AxisSum")


@_fixed(MaxPool2d)
class PyMaxPool2dModel(_SafeModel):
    a_in: PyInPort = _IN
    s_out: PyOutPort = _OUT

    def compute(self, x):
        p = self.proc_params
        y = maxpool_kernel(x, p["in_shape"], p["kernel"], p["stride"], p["padding"])
        return to_int32(y, "MaxPool2d")


@_fixed(Permute)
class PyPermuteModel(_SafeModel):
    a_in: PyInPort = _IN
    s_out: PyOutPort = _OUT

    def compute(self, x):
        p = self.proc_params
        return to_int32(permute_kernel(x, p["in_shape"], p["perm"]), "Permute")


@_fixed(FixedLIF)
class PyFixedLIFModel(_SafeModel):
    a_in: PyInPort = _IN
    s_out: PyOutPort = _OUT
    u: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    v: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    du: int = LavaPyType(int, np.uint16, precision=12)
    dv: int = LavaPyType(int, np.uint16, precision=12)
    vth: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=17)
    bias_mant: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=13)
    bias_exp: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=3)

    def compute(self, a_in):
        u, v, s, v_pre = lif_fixed_step(self.u, self.v, a_in, self.du, self.dv, self.vth,
                                        self.bias_mant, self.bias_exp, self.proc_params["compare"])
        self.u[:] = u
        self.v[:] = v
        return (np.where(s, v_pre, 0) if self.proc_params["graded"] else s).astype(np.int32)


@_fixed(Accumulator)
class PyAccumulatorModel(_SafeModel):
    a_in: PyInPort = _IN
    s_out: PyOutPort = _OUT
    total: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=32)

    def compute(self, x):
        total = to_int32(self.total.astype(np.int64) + x, "Accumulator")
        self.total[:] = total
        return total


@_fixed(Delay)
class PyDelayModel(_SafeModel):
    a_in: PyInPort = _IN
    s_out: PyOutPort = _OUT

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self._fifo: deque = deque()

    def compute(self, x):
        self._fifo.append(to_int32(x, "Delay"))
        if len(self._fifo) > self.proc_params["steps"]:
            return self._fifo.popleft()
        return np.zeros_like(self._fifo[0])
