"""Issue 13: A²OS²A and Spikformer + SEMM, trained, through every stage (see ``seed_parity_case``)."""
import pytest

from seed_parity_case import check_design


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["spikformer-a2os2a-2-64-digits", "spikformer_semm-2-64-digits"])
def test_a_trained_seed_design_is_bit_exact_on_every_stage(arch, tmp_path):
    check_design(arch, tmp_path)
