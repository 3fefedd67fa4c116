"""The op × backend matrix: docs/ops.md is generated from the backends' own tables and up to date,
and every backend refuses an op it lacks before it starts, naming the op and the backend."""
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from step_deploy import ir, opmatrix
from step_deploy.exporters.lava_export import build_lava
from step_deploy.exporters.nir_export import export_nir
from step_deploy.exporters.onnx_export import export_onnx
from step_deploy.fixedpoint import loihi as fx
from step_deploy.simulators.golden import run_golden
from step_deploy.simulators.reference import run


@dataclass(frozen=True, eq=False)
class Softmax(ir.Node):
    """No backend implements this (deliberately unregistered)."""

    def infer_shape(self, in_shapes):
        return in_shapes[0]


def test_docs_ops_md_is_up_to_date():
    assert opmatrix.DOC.read_text() == opmatrix.markdown(), "run: python -m step_deploy.opmatrix"
    assert opmatrix.main(["--check"]) == 0


def test_the_matrix_comes_from_the_backends_tables():
    cols = {b.name: b for b in opmatrix.backends()}
    assert set(cols) == {"reference", "onnx", "nir", "lava", "golden-integer:loihi-fixed_pt",
                         "golden-integer:fpga-int", "fpga-hls"}
    from step_deploy.exporters.onnx_ops import EMITTERS
    from step_deploy.simulators.reference_ops import FLOAT_OPS

    assert cols["onnx"].ops == set(EMITTERS) | {"Input"}
    assert cols["reference"].ops == set(FLOAT_OPS)
    assert "LoihiLIF" in cols["lava"].ops and "Linear" not in cols["lava"].ops
    from step_deploy.fpga.hls_layers import KERNEL_OPS

    assert set(KERNEL_OPS) < cols["fpga-hls"].ops and "LoihiLIF" not in cols["fpga-hls"].ops
    assert cols["fpga-hls"].ops - set(KERNEL_OPS) == {"Input", "Output", "FpgaQuantizeInput", "Reshape", "Flatten"}
    core = dict(opmatrix.op_groups())["core IR ops (`step_deploy/ir/nodes.py`)"]
    assert "Neuron" in core and "LoihiLIF" not in core


def float_graph(extra=None):
    nodes = [ir.Input("x", shape=(4,), kind="counts"),
             ir.Linear("fc", ("x",), weight=np.eye(4, dtype=np.float32)), ir.Neuron("lif", ("fc",))]
    last = "lif"
    if extra is not None:
        nodes.append(extra(last))
        last = nodes[-1].name
    return ir.Graph(nodes + [ir.Output("y", (last,))])


def quantized_graph():
    return ir.Graph([ir.Input("x", shape=(4,), kind="counts"),
                     fx.FixedLinear("fc", ("x",), weight=np.eye(4, dtype=np.int32) * 2),
                     fx.LoihiLIF("lif", ("fc",), vth=1), ir.Output("y", ("lif",))],
                    metadata={ir.FORMAT_KEY: fx.FORMAT_NAME})


ENTRY_POINTS = {
    "reference": lambda g: run(g, torch.zeros(2, 1, 4)),
    "onnx": lambda g: export_onnx(g),
    "nir": lambda g: export_nir(g),
    "lava": lambda g: build_lava(g, {"x": np.zeros((2, 4), np.int64)}, steps=2),
    "golden-integer:loihi-fixed_pt": lambda g: run_golden(g, torch.zeros(2, 1, 4, dtype=torch.int64)),
}


@pytest.mark.parametrize("backend", sorted(ENTRY_POINTS))
def test_every_backend_refuses_an_op_it_lacks_by_name(backend):
    g = quantized_graph() if backend in ("lava", "golden-integer:loihi-fixed_pt") else float_graph()
    g.add(Softmax("soft", ("lif",)))
    g.replace(ir.Output("y", ("soft",)))
    with pytest.raises(ir.UnsupportedOpError, match=rf"\[soft\] op Softmax is not supported by backend '{backend}'"):
        ENTRY_POINTS[backend](g)


@pytest.mark.parametrize("backend", ["reference", "onnx", "nir"])
def test_float_backends_refuse_a_quantized_graph_before_any_work(backend):
    with pytest.raises(ir.UnsupportedOpError) as e:
        ENTRY_POINTS[backend](quantized_graph())
    msg = str(e.value)
    assert f"op FixedLinear is not supported by backend '{backend}'" in msg and "op LoihiLIF" in msg
    assert "golden" in msg  # the hint says where quantized graphs go
    assert [d.node for d in e.value.diagnostics] == ["fc", "lif"]


@pytest.mark.parametrize("backend", ["lava", "golden-integer:loihi-fixed_pt"])
def test_integer_backends_refuse_a_float_graph_before_any_work(backend):
    name = backend.split(":")[0]  # a float graph names no fixed-point format
    with pytest.raises(ir.UnsupportedOpError, match=rf"\[fc\] op Linear is not supported by backend '{name}'"
                                                    r".*quantize"):
        ENTRY_POINTS[backend](float_graph())
