"""On-grid fine-tuning (``step-train --qat-epochs``, ``step_deploy.qat``): the fine-tuned PyTorch model
computes what both integer targets compute, spike for spike, where post-training quantization of the
same float-trained model does not."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from step_deploy import qat
from step_deploy.evaluation import accuracy_float_vs_golden
from step_deploy.passes.quantize_fpga import quantize_fpga
from step_deploy.training import TrainArgs, _load_split, evaluate, fine_tune, train

# ----------------------------------------------------------------------------- the grid


def test_grid_step_is_the_power_of_two_that_holds_the_largest_weight_in_127_levels():
    assert qat.grid_step(torch.tensor([0.5, -1.0])) == 2.0 ** -6  # 1/127 < 2^-6 = 1/64, 1 = 64 steps
    assert qat.grid_step(torch.tensor([1.0 / 127])) == 2.0 ** -13  # (1/127) / 127 = 6.2e-5 -> 2^-13
    assert qat.grid_step(torch.tensor([3.0])) == 2.0 ** -5  # 3/127 = 0.0236 -> 2^-5
    assert qat.grid_step(torch.tensor([3.0]), unit=0.25) == 0.25  # a coarser target unit wins
    assert qat.grid_step(torch.zeros(3)) == 1.0


def test_on_grid_parametrization_rounds_the_folded_weights_and_passes_the_gradient_straight_through():
    lin = nn.Linear(2, 2, bias=False)
    bn = nn.BatchNorm1d(2).eval()
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.3, -0.71], [1.9, 0.013]]))
        bn.weight.copy_(torch.tensor([2.0, 0.5]))
        bn.running_var.fill_(1.0 - bn.eps)  # gain g = gamma
    model = nn.Sequential(lin, bn)
    qat.attach(model, [qat.GridSynapse("0", (qat.GridPart("0", "1", 0, 2),))])
    w = lin.parametrizations.weight.original
    gain = torch.tensor([2.0, 0.5])[:, None]
    out = lin.weight
    folded = out.detach().double() * gain.double()
    step = qat.grid_step(w.detach().double() * gain.double())
    assert torch.equal(folded / step, torch.round(folded / step))  # on the grid
    assert (folded / step).abs().max() <= qat.GRID_LEVELS
    assert ((out.detach() - w.detach()) * gain).abs().max() <= step / 2 + 1e-6  # moved by at most half a step
    out.sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))  # straight through
    assert not bn.weight.requires_grad and not bn.parametrizations.bias.original.requires_grad  # BN frozen


def test_rows_of_one_module_in_two_ir_synapses_get_their_own_grids():
    """SEMM's EMSP: one fc1 Linear is two IR synapses (its channel halves), each with its own grid."""
    lin = nn.Linear(3, 4, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[4.0, 1.01, 0.3], [2.2, -3.3, 0.1], [0.04, 0.011, -0.02], [0.05, 0.001, 0.0]]))
    model = nn.Sequential(lin)
    halves = [qat.GridSynapse("h0", (qat.GridPart("0", None, 0, 2),)), qat.GridSynapse("h1", (qat.GridPart("0", None, 2, 4),))]
    qat.attach(model, halves)
    qat.detach(model, halves)
    w = lin.weight.detach().double()
    for rows in (slice(0, 2), slice(2, 4)):
        step = qat.grid_step(w[rows])
        assert torch.equal(w[rows] / step, torch.round(w[rows] / step))
    assert qat.grid_step(w[2:]) < qat.grid_step(w[:2]) / 32  # the small half kept its fine grid
    assert w[3, 1] != 0  # 0.001 survives on the fine grid (2^-12), not on the big half's (2^-5)


class _ConvBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        return self.bn(self.conv(x))


def test_baking_folds_the_batchnorm_in_place_exactly_and_keeps_the_function():
    torch.manual_seed(0)
    m = _ConvBN().eval()
    with torch.no_grad():
        m.bn.running_mean.uniform_(-1, 1)
        m.bn.running_var.uniform_(0.5, 2)
        m.bn.weight.uniform_(0.5, 1.5)
        m.bn.bias.uniform_(-1, 1)
    syn = [qat.GridSynapse("conv", (qat.GridPart("conv", "bn", 0, 4),))]
    x = torch.randint(0, 2, (8, 3, 6, 6)).float()  # spikes
    qat.attach(m, syn)
    with torch.no_grad():
        on_grid = m(x)
    qat.detach(m, syn)
    with torch.no_grad():
        baked = m(x)
    assert torch.allclose(baked, on_grid, atol=1e-5)  # the same function, now without Q/g rounding
    assert torch.equal(m.bn.running_mean, torch.zeros(4)) and torch.equal(m.bn.weight, torch.ones(4))
    step = qat.grid_step(m.conv.weight.detach())
    assert torch.equal(m.conv.weight / step, torch.round(m.conv.weight / step))
    assert torch.equal(m.bn.bias / step, torch.round(m.bn.bias / step))
    with torch.no_grad():  # PyTorch's BatchNorm is now an exact x + beta: float32 arithmetic on the grid is exact
        exact = torch.nn.functional.conv2d(x.double(), m.conv.weight.double(), padding=1) + m.bn.bias.double()[:, None, None]
        assert torch.equal(m(x).double(), exact)


# ----------------------------------------------------------------------------- a trained model


@pytest.fixture(scope="module")
def sdt_events():
    """SDT (its membrane shortcuts join synapses of different weight ranges in one Loihi scale class:
    the hard case) trained 2 epochs on digits-events, and the same model fine-tuned 1 epoch on the grid."""
    args = TrainArgs(arch="sdt-1-64-digits", data="digits-events", epochs=2, batch_size=32, seed=0)
    float_model, _ = train(args, progress=False)
    state = {k: v.clone() for k, v in float_model.state_dict().items()}
    tuned, metrics = fine_tune(float_model, TrainArgs(**{**args.__dict__, "qat_epochs": 1}), progress=False)
    from step_deploy.data.calibration import resolve_calibration
    from step_deploy.models import build_model
    from step_deploy.training import model_overrides_for
    plain = build_model(args.arch, **model_overrides_for(args.data, None))
    plain.load_state_dict(state)
    # the calibration step-export uses by default (and the fine-tuning settled on): 256 training samples
    xc = resolve_calibration(args.data, root=None, model=tuned, info=None, n_calib=256, n_eval=1).x_calib
    calib = torch.utils.data.TensorDataset(xc, torch.zeros(len(xc), dtype=torch.int64))
    return plain.eval(), tuned.eval(), metrics, calib, _load_split(args, "test", tuned.step)


def _mismatches(model, test, calib, quantize=None):
    r = accuracy_float_vs_golden(model, test, calib=calib, quantize=quantize)
    return r, round((1 - r["spike_agreement"]) * 1e9)


@pytest.mark.slow  # trains a model (about 40 s); the grid and baking tests above stay in test-fast
@pytest.mark.parametrize("target", ["loihi", "fpga"])
def test_fine_tuned_model_equals_both_integer_targets_spike_for_spike(sdt_events, target):
    plain, tuned, metrics, calib, test_set = sdt_events
    quantize = quantize_fpga if target == "fpga" else None
    r_ptq, ptq_off = _mismatches(plain, test_set, calib, quantize)
    r, off = _mismatches(tuned, test_set, calib, quantize)
    assert ptq_off > 0 and r_ptq["spike_agreement"] < 0.9999  # post-training quantization flips spikes ...
    assert r["spike_agreement"] == 1.0  # ... the fine-tuned model none, in any layer or step
    assert r["prediction_agreement"] == 1.0 and r["float_acc"] == r["golden_acc"]
    n = len(test_set)  # PyTorch itself (BatchNorm unfolded) included: the same count of correct digits
    assert round(evaluate(tuned, test_set) * n) == round(r["golden_acc"] * n)
    errs = [v["weight_rel_error"] for v in r["report"]["layers"].values() if "weight_rel_error" in v]
    assert errs and max(errs) == 0.0  # nothing left to round
    assert metrics["qat"]["epochs"] == 1 and metrics["qat"]["max_off_grid_steps"] < 1e-5


def test_qat_epochs_is_validated_before_training():
    from step_deploy.cli import train_main
    assert train_main(["--arch", "sdt-1-64-digits", "--qat-epochs", "-1", "-o", "/nonexistent/x.ckpt"]) == 2


@pytest.mark.parametrize("arch", ["spikformer-2-64-digits", "sdt-1-64-digits", "qkformer-3-64-digits",
                                  "spikformer-statten-2-64-digits", "sdt-statten-1-64-digits",
                                  "spikformer-a2os2a-2-64-digits", "spikformer-bsa-2-64-digits",
                                  "spikformer_semm-2-64-digits"])
def test_every_ir_synapse_of_every_design_is_put_on_a_grid(arch):
    """The fine-tuning reaches every synapse the quantizers will round, including SEMM's stacked
    experts (four modules, one IR synapse) and EMSP halves (one module, two IR synapses); one left
    out would be rounded at export and flip spikes (it happened: SEMM's were skipped at first)."""
    from step_deploy.frontend.capture import capture
    from step_deploy.models import build_model

    model = build_model(arch).eval()
    graph = capture(model)
    ir_synapses = {n.name for n in graph.nodes.values() if n.op in ("Linear", "Conv1d", "Conv2d")}
    covered = qat.grid_synapses(model)
    assert {s.name for s in covered} == ir_synapses
    modules = dict(model.named_modules())
    for s in covered:  # the parts' rows add up to the IR synapse's output channels
        assert sum(p.stop - p.start for p in s.parts) == graph[s.name].weight.shape[0]
        assert all(isinstance(modules[p.synapse], (nn.Linear, nn.Conv1d, nn.Conv2d)) for p in s.parts)
