"""``digits-seq`` through the models and the stages: the digits read one row per step (T = 8), as the
zoo's image models take it (``models.encoders.SequenceEncoder``: frame t holds only row t, at its place).
This is the data on which STAtten's attention across steps is compared with per-step attention
(``benchmarks/statten_temporal.py``)."""
import numpy as np
import pytest
import torch

from conftest import random_model
from step_deploy.data import load_dataset
from step_deploy.models.encoders import SequenceEncoder, make_encoder
from step_deploy.training import model_overrides_for


def test_frame_t_holds_row_t_at_its_place_and_nothing_else():
    x = torch.arange(2 * 8 * 8, dtype=torch.float32).reshape(2, 8, 8) + 1  # no zero pixel
    frames = make_encoder("sequence", 8)(x).reshape(8, 2, 1, 8, 8)
    for t in range(8):
        for b in range(2):
            assert torch.equal(frames[t, b, 0, t], x[b, t])
            others = torch.cat([frames[t, b, 0, :t], frames[t, b, 0, t + 1:]])
            assert int(torch.count_nonzero(others)) == 0
    # summed over time, the frames give back the image
    assert torch.equal(frames.sum(0)[:, 0], x)


def test_a_sequence_of_the_wrong_length_is_refused_by_name():
    with pytest.raises(ValueError, match=r"T=8"):
        SequenceEncoder(8)(torch.zeros(2, 4, 8))


def test_the_data_set_sets_the_model_up_for_one_row_per_step():
    over = model_overrides_for("digits-seq", None)
    assert over == {"num_classes": 10, "encoding": "sequence", "in_channels": 1, "img_size": 8, "step": 8}


@pytest.mark.parametrize("arch", ["spikformer-statten-2-64-digits", "sdt-1-64-digits"])
def test_capture_and_the_integer_models_follow_pytorch_on_digits_seq(arch):
    """Reference = PyTorch at every neuron and step (0 mismatches); calibration takes digits-seq for such a
    model; the FPGA golden model runs it (T = 8, a new analog row at every step)."""
    from step_deploy.data.calibration import resolve_calibration
    from step_deploy.frontend.capture import capture, encoded_input, torch_traces
    from step_deploy.passes.fold_batchnorm import fold_batchnorm
    from step_deploy.passes.quantize_fpga import quantize_fpga
    from step_deploy.simulators.golden import run_golden
    from step_deploy.simulators.reference import run

    model = random_model(arch, **model_overrides_for("digits-seq", None))
    x = load_dataset("digits-seq", "test").tensors[0][:6]
    g = capture(model)
    assert g.inputs[0].kind == "analog" and g.inputs[0].shape == (1, 8, 8) and g.metadata["time_steps"] == 8
    logits, traces = torch_traces(model, x)
    ref = run(g, encoded_input(model, x), steps=8, record=True)
    assert torch.allclose(ref.final(), logits, atol=1e-5)
    fired = 0
    for name, spikes in traces.items():
        assert int((ref.traces[name] != spikes).sum()) == 0, name
        fired += int(spikes.sum())
    assert fired > 0
    info = type("Info", (), {"metadata": {"dataset": "digits-seq"}, "path": None})()
    data = resolve_calibration(None, root=None, model=model, info=info, n_calib=16, n_eval=6)
    assert tuple(data.x_calib.shape) == (16, 8, 8) and "digits-seq" in data.source
    q, _ = quantize_fpga(fold_batchnorm(g), encoded_input(model, data.x_calib), steps=8)
    out = run_golden(q, encoded_input(model, x), steps=8).final()
    assert out.shape == (6, 10) and np.isfinite(out.numpy()).all()
