"""IR: every node type round-trips through serialization; verifier rules; shape errors; determinism."""
import re

import numpy as np
import pytest

from step_deploy import ir
from step_deploy.fixedpoint import fpga as fp
from step_deploy.fixedpoint import loihi as fx

R = np.random.default_rng(0)
W = lambda *s: R.standard_normal(s).astype(np.float32)  # noqa: E731

# one instance of every node type (with the input shape it needs)
EXAMPLES = {
    "Input": (ir.Input("n", shape=(2, 4, 4), kind="spikes"), []),
    "Output": (ir.Output("n", ("a",)), [(3,)]),
    "Conv2d": (ir.Conv2d("n", ("a",), weight=W(4, 2, 3, 3), bias=W(4), stride=(2, 2), padding=(1, 1)), [(2, 8, 8)]),
    "Conv1d": (ir.Conv1d("n", ("a",), weight=W(4, 2, 1), bias=None), [(2, 5)]),
    "Linear": (ir.Linear("n", ("a",), weight=W(3, 5), bias=W(3)), [(7, 5)]),
    "BatchNorm": (ir.BatchNorm("n", ("a",), gamma=W(5), beta=W(5), mean=W(5), var=np.ones(5, np.float32), axis=-1), [(7, 5)]),
    "Neuron": (ir.Neuron("n", ("a",), kind="PLIF", tau=3.5, v_threshold=0.5, reset="soft", compare=">",
                         output="integer", max_level=2), [(4,)]),
    "KLIFNeuron": (ir.KLIFNeuron("n", ("a",), k=0.75, v_threshold=0.5), [(4,)]),
    "EIFNeuron": (ir.EIFNeuron("n", ("a",), delta_t=1.5, theta_rh=0.7), [(4,)]),
    "CLIFNeuron": (ir.CLIFNeuron("n", ("a",), tau=3.0), [(4,)]),
    "GLIFNeuron": (ir.GLIFNeuron("n", ("a",), params_t=W(4, 5), gates=(1.0, 0.0, 1.0)), [(4,)]),
    "TemporalLinear": (ir.TemporalLinear("n", ("a",), weight=W(4, 4), bias=W(4)), [(2, 3)]),
    "Heaviside": (ir.Heaviside("n", ("a",), threshold=0.25, compare=">"), [(3,)]),
    "MatMul": (ir.MatMul("n", ("a", "b"), transpose_b=True, scale=0.125), [(2, 6, 4), (2, 6, 4)]),
    "Mul": (ir.Mul("n", ("a", "b")), [(2, 6, 4), (2, 1, 4)]),
    "Sum": (ir.Sum("n", ("a",), axis=1, keepdim=True), [(2, 6, 4)]),
    "Mean": (ir.Mean("n", ("a",), axis=0), [(6, 4)]),
    "Scale": (ir.Scale("n", ("a",), factor=0.25), [(3,)]),
    "Add": (ir.Add("n", ("a", "b", "c")), [(3,), (3,), (3,)]),
    "Reshape": (ir.Reshape("n", ("a",), shape=(2, 12)), [(6, 4)]),
    "Transpose": (ir.Transpose("n", ("a",), perm=(1, 0, 2)), [(2, 6, 4)]),
    "Flatten": (ir.Flatten("n", ("a",), start_dim=1, end_dim=2), [(2, 6, 4)]),
    "MaxPool2d": (ir.MaxPool2d("n", ("a",), kernel_size=(3, 3), stride=(2, 2), padding=(1, 1)), [(2, 8, 8)]),
    "AvgPool2d": (ir.AvgPool2d("n", ("a",), kernel_size=(2, 2), stride=(2, 2)), [(2, 8, 8)]),
    "Delay": (ir.Delay("n", ("a",), steps=3), [(3,)]),
    "TemporalMean": (ir.TemporalMean("n", ("a",)), [(3,)]),
    "ReLU": (ir.ReLU("n", ("a",)), [(3, 4)]),
    "Shiftmax": (ir.Shiftmax("n", ("a",), axis=-1, frac_bits=6), [(2, 5, 5)]),
    "TemporalBlockSum": (ir.TemporalBlockSum("n", ("a",), block=2), [(2, 4, 4)]),
    # Loihi fixed-point types (step_deploy.fixedpoint.loihi)
    "QuantizeInput": (fx.QuantizeInput("n", ("a",), scale=128.0, bits=8), [(3,)]),
    "FixedLinear": (fx.FixedLinear("n", ("a",), weight=np.array([[2, -4, 0]], np.int32), weight_exp=1,
                                   bias_mant=np.array([3], np.int32)), [(7, 3)]),
    "FixedConv2d": (fx.FixedConv2d("n", ("a",), weight=np.ones((4, 2, 3, 3), np.int32), padding=(1, 1)), [(2, 8, 8)]),
    "FixedConv1d": (fx.FixedConv1d("n", ("a",), weight=np.ones((4, 2, 1), np.int32)), [(2, 5)]),
    "LoihiLIF": (fx.LoihiLIF("n", ("a",), vth=8, compare=">="), [(4,)]),
    "TemporalSum": (fx.TemporalSum("n", ("a",)), [(3,)]),
    "FpgaQuantizeInput": (fp.FpgaQuantizeInput("n", ("a",), scale=128.0, bits=8), [(3,)]),
    "FpgaLinear": (fp.FpgaLinear("n", ("a",), weight=np.array([[2, -4, 0]], np.int32), shift=np.array([1]),
                                 bias=np.array([3], np.int64)), [(2, 3)]),
    "FpgaConv2d": (fp.FpgaConv2d("n", ("a",), weight=np.ones((4, 2, 3, 3), np.int32), shift=np.zeros(4, np.int64),
                                 padding=(1, 1)), [(2, 8, 8)]),
    "FpgaConv1d": (fp.FpgaConv1d("n", ("a",), weight=np.ones((4, 2, 1), np.int32), shift=np.zeros(4, np.int64)),
                   [(2, 5)]),
    "FpgaLIF": (fp.FpgaLIF("n", ("a",), threshold=8, membrane_bits=18), [(4,)]),
    "FpgaTemporalSum": (fp.FpgaTemporalSum("n", ("a",)), [(3,)]),
}
EXPECTED_SHAPES = {"Input": (2, 4, 4), "Conv2d": (4, 4, 4), "Conv1d": (4, 5), "Linear": (7, 3), "MatMul": (2, 6, 6),
                   "Mul": (2, 6, 4), "Sum": (2, 1, 4), "Mean": (4,), "Reshape": (2, 12), "Transpose": (6, 2, 4),
                   "Flatten": (2, 24), "MaxPool2d": (2, 4, 4), "AvgPool2d": (2, 4, 4)}


def test_examples_cover_every_node_type():
    assert set(EXAMPLES) == set(ir.NODE_TYPES)


@pytest.mark.parametrize("op", sorted(ir.NODE_TYPES))
def test_node_round_trip_and_shape(op, tmp_path):
    node, in_shapes = EXAMPLES[op]
    names = ["a", "b", "c"][: len(in_shapes)]
    g = ir.Graph([ir.Input(nm, shape=s) for nm, s in zip(names, in_shapes)] + [node])
    ir.save(g, tmp_path)
    back = ir.load(tmp_path)
    assert list(back.nodes) == list(g.nodes)
    assert ir.nodes_equal(back["n"], node)
    shape = node.infer_shape(in_shapes)
    assert back["n"].infer_shape(in_shapes) == shape
    if op in EXPECTED_SHAPES:
        assert shape == EXPECTED_SHAPES[op]
    # the class's own docstring states its per-step equation ("Y[t] = ...", "H[t] = ..."); a class
    # without one gets the dataclass signature "Op(name: str, ...)" as __doc__, which has no "X[t] ="
    doc = type(node).__doc__ or ""
    assert re.search(r"\b[A-Z]\w*\[t\][^=`\n]*= ", doc), f"{op}: docstring states no per-step equation"


W34 = W(3, 4)


def _tiny():
    return ir.Graph([ir.Input("x", shape=(4,)), ir.Linear("fc", ("x",), weight=W34.copy(), bias=None),
                     ir.Neuron("lif", ("fc",)), ir.Output("y", ("lif",))])


def test_serialization_is_byte_deterministic(tmp_path):
    ir.save(_tiny(), tmp_path / "a")
    ir.save(_tiny().copy(), tmp_path / "b")
    for f in ("graph.json", "weights.npz"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()


def test_verifier_reports_every_problem_with_node_names():
    g = _tiny()
    g.add(ir.Linear("bad", ("nowhere",), weight=W(2, 2), bias=None))
    diags = ir.verify(g)
    assert any(d.rule == "inputs-exist" and d.node == "bad" for d in diags)


def test_verifier_shape_mismatch_and_nan():
    g = ir.Graph([ir.Input("x", shape=(5,)), ir.Linear("fc", ("x",), weight=W(3, 4), bias=None), ir.Output("y", ("fc",))])
    diags = ir.errors(ir.verify(g))
    assert [d.rule for d in diags] == ["shapes"] and diags[0].node == "fc"
    w = W(3, 5)
    w[0, 0] = np.nan
    g2 = ir.Graph([ir.Input("x", shape=(5,)), ir.Linear("fc", ("x",), weight=w, bias=None), ir.Output("y", ("fc",))])
    d = ir.errors(ir.verify(g2))
    assert d[0].rule == "finite-parameters" and d[0].node == "fc"
    with pytest.raises(ir.IRError, match="NaN"):
        ir.check(g2)


def test_cycle_detected():
    g = ir.Graph([ir.Input("x", shape=(3,)), ir.Add("a", ("x", "b")), ir.Add("b", ("a", "x")), ir.Output("y", ("b",))])
    assert any(d.rule == "acyclic" for d in ir.verify(g))


def test_invalid_neuron_fields_rejected():
    with pytest.raises(ValueError, match="compare"):
        ir.Neuron("n", ("x",), compare="=>")


def test_schema_version_checked(tmp_path):
    ir.save(_tiny(), tmp_path)
    p = tmp_path / "graph.json"
    p.write_text(p.read_text().replace('"schema_version": 1', '"schema_version": 99'))
    with pytest.raises(ValueError, match="schema_version"):
        ir.load(tmp_path)


def test_ir_imports_nothing_else_of_the_project():
    import pathlib
    import re

    src = pathlib.Path(ir.__file__).parent
    for f in src.glob("*.py"):
        text = f.read_text()
        assert not re.search(r"^\s*(from|import)\s+step_deploy", text, re.M), f.name
        assert not re.search(r"^\s*from\s+\.\.", text, re.M), f.name
