"""Fixed-point CPU process models (tag ``'fixed_pt'``) for ``exporters/lava_processes.py``.

Each model is ``receive → compute → send`` in the spiking phase (latency 0), except ``Delay`` and
``BlockSum`` (they send what they received earlier: latency ``steps`` and ``block - 1``).
The arithmetic lives in ``lava_kernels.py`` (plain numpy, no lava) so that it can be read,
reused and tested without Lava. Importing this module registers the models with Lava's compiler
(``lava_compat.register_process_models``); ``lava_export`` imports it before building a network.
"""
from __future__ import annotations

import sys
from collections import deque

import numpy as np

from .lava_compat import import_lava, register_process_models

from .lava_kernels import (axis_sum_kernel, block_sum_step, lif_fixed_step, matmul_kernel, maxpool_kernel,
                           mul_kernel, permute_kernel, relu_kernel, shiftmax_kernel, to_int32)

import_lava()

from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

from .lava_processes import (Accumulator, AxisSum, BlockSum, Delay, ElementwiseAdd, FixedLIF, LiveMatMul,
                             LiveMul, LiveReLU, MaxPool2d, Permute, Shiftmax)

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
        p = self.proc_params
        u, v, s, v_pre = lif_fixed_step(self.u, self.v, a_in, self.du, self.dv, self.vth,
                                        self.bias_mant, self.bias_exp, p["compare"], p["reset"], p["fire"],
                                        p["max_level"], p["round_d"])
        self.u[:] = u
        self.v[:] = v
        return (np.where(s != 0, v_pre, 0) if p["graded"] else s).astype(np.int32)


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


@_fixed(LiveReLU)
class PyLiveReLUModel(_SafeModel):
    a_in: PyInPort = _IN
    s_out: PyOutPort = _OUT

    def compute(self, x):
        return to_int32(relu_kernel(x), "LiveReLU")


@_fixed(Shiftmax)
class PyShiftmaxModel(_SafeModel):
    a_in: PyInPort = _IN
    s_out: PyOutPort = _OUT

    def compute(self, x):
        p = self.proc_params
        return to_int32(shiftmax_kernel(x, p["in_shape"], p["axis"], p["frac_bits"]), "Shiftmax")


@_fixed(BlockSum)
class PyBlockSumModel(_SafeModel):
    """``block_sum_step`` on the golden step ``u = time_step - 1 - offset`` of this step's input; sends
    the latest completed block's sum (``Y[u - block + 1]``)."""

    a_in: PyInPort = _IN
    s_out: PyOutPort = _OUT

    def __init__(self, proc_params):
        super().__init__(proc_params)
        n = int(np.prod(self.proc_params["shape"]))
        self._acc = np.zeros(n, np.int64)
        self._last = np.zeros(n, np.int64)

    def compute(self, x):
        p = self.proc_params
        u = self.time_step - 1 - p["offset"]
        self._acc, self._last = block_sum_step(self._acc, self._last, x, u, p["block"])
        to_int32(self._acc, "BlockSum")  # the running sum must fit the embedded core's int32 too
        return to_int32(self._last, "BlockSum")
