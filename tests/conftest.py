import numpy as np
import pytest
import torch

from step_deploy.models import build_model
from step_deploy.models.random_stats import randomize_batchnorm  # noqa: F401  (tests import it from here)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def random_model(arch, seed=0, **over):
    torch.manual_seed(seed)
    return randomize_batchnorm(build_model(arch, **over).eval(), seed)


#: epochs of the tiny digits models the accuracy tests train (shared: each is trained once per run)
DIGITS_EPOCHS = {"spikformer-2-64-digits": 8, "sdt-1-64-digits": 8, "qkformer-2-64-digits": 10}


@pytest.fixture(scope="session")
def trained_digits():
    """``trained_digits(arch)``: a tiny digits model trained for ``DIGITS_EPOCHS[arch]`` epochs
    (seed 0), trained once per test session and shared by every test that asks for it."""
    from step_deploy.training import TrainArgs, train

    cache = {}

    def get(arch):
        if arch not in cache:
            cache[arch] = train(TrainArgs(arch=arch, epochs=DIGITS_EPOCHS[arch]), progress=False)[0].eval()
        return cache[arch]
    return get
