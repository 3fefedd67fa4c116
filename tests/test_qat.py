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
    gain = torch.tensor([2.0, 0.5])
    p = qat.OnGrid(gain, ndim=2)
    w = torch.tensor([[0.3, -0.71], [1.9, 0.013]], requires_grad=True)
    out = p(w)
    folded = out.detach() * gain[:, None]
    step = qat.grid_step(w.detach() * gain[:, None])
    assert torch.equal(folded / step, torch.round(folded / step))  # on the grid
    assert (folded / step).abs().max() <= qat.GRID_LEVELS
    assert (out.detach() - w.detach()).abs().max() <= step / 2 / 0.5 + 1e-7  # moved by at most half a step
    out.sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))  # straight through


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
    syn = [qat.GridSynapse("conv", "bn")]
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
