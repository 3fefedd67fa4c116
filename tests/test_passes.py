"""The pass registry: every pass registered with requires/guarantees, checked when a pipeline runs."""
import pytest
import torch

from step_deploy import ir
from step_deploy.passes import PASSES, PIPELINES, PassContext, PassError, graph_properties, run_pipeline
from step_deploy.simulators.golden import run_golden
from step_deploy.simulators.reference import run

from test_golden import T, build


def test_every_pass_is_registered_with_its_contract():
    assert set(PASSES) == {"fold-batchnorm", "map-to-cores", "quantize-loihi", "delay-balance",
                           "quantize-fpga"}
    for p in PASSES.values():
        assert p.requires and p.guarantees, p.name
    for name, passes in PIPELINES.items():
        assert all(p in PASSES for p in passes), name


def test_the_loihi_pipeline_runs_every_pass_and_records_what_it_guarantees():
    g, x = build("conv")
    ctx = PassContext(calibration=x[:32], steps=T, target="loihi2")
    q = run_pipeline(g, "loihi", ctx)
    assert graph_properties(q) == {"bn-folded", "mapped", "quantized:loihi-fixed_pt", "delay-balanced"}
    assert q.metadata[ir.FORMAT_KEY] == "loihi-fixed_pt"
    assert set(ctx.results) == {"map-to-cores", "quantize-loihi", "delay-balance"}
    assert ctx.results["map-to-cores"].total_cores > 0 and ctx.results["delay-balance"].depth == 2
    assert run_golden(q, x[:2], steps=T).traces  # the golden model runs the result
    assert "properties" not in g.metadata  # the input graph is left alone


def test_a_pass_whose_requirement_is_unmet_fails_naming_pass_and_property():
    g, x = build("mlp")
    with pytest.raises(PassError, match=r"pass 'quantize-loihi' requires \['bn-folded'\].*fold-batchnorm"):
        run_pipeline(g, ["quantize-loihi"], PassContext(calibration=x[:8], steps=T))
    with pytest.raises(PassError, match=r"pass 'delay-balance' requires \['quantized:loihi-fixed_pt'\]"):
        run_pipeline(g, ["fold-batchnorm", "delay-balance"])
    q = run_pipeline(g, ["fold-batchnorm", "quantize-loihi"], PassContext(calibration=x[:8], steps=T))
    with pytest.raises(PassError, match=r"pass 'fold-batchnorm' requires \['float'\]"):
        run_pipeline(q, "fold-batchnorm")


def test_missing_context_inputs_and_unknown_passes_are_named():
    g, _ = build("mlp")
    with pytest.raises(PassError, match="pass 'quantize-loihi' needs calibration"):
        run_pipeline(g, ["fold-batchnorm", "quantize-loihi"])
    with pytest.raises(PassError, match="pass 'map-to-cores' needs target"):
        run_pipeline(g, ["fold-batchnorm", "map-to-cores"])
    with pytest.raises(PassError, match="unknown pass 'no-such-pass'"):
        run_pipeline(g, "no-such-pass")


def test_float_pipelines_need_no_context():
    g, x = build("mlp")
    out = run_pipeline(g, "nir")
    assert graph_properties(out) == {"float", "bn-folded"}
    assert torch.equal(run(g, x[:4], steps=T, record=True).traces["lif1"],
                       run(out, x[:4], steps=T, record=True).traces["lif1"])
