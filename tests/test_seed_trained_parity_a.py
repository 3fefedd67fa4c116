"""Issue 13: STAtten (on Spikformer and on SDT) and bipolar self-attention, trained, through every stage
(see ``seed_parity_case``)."""
import pytest

from seed_parity_case import check_design


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["spikformer-statten-2-64-digits", "sdt-statten-1-64-digits",
                                  "spikformer-bsa-2-64-digits"])
def test_a_trained_seed_design_is_bit_exact_on_every_stage(arch, tmp_path):
    check_design(arch, tmp_path)
