"""What the diagnostics' figures say matches the numbers they are drawn from."""

import math

import torch

from pyro_lvm.diagnostics import Evidence
from pyro_lvm.diagnostics.plots import plot_evidence_diagnostics


def test_khat_share_above_the_threshold_does_not_count_unestimable_values():
    """Regression: the k-hat panel's "% above 0.7" counted NaN k-hats (and non-finite
    log p(x)) as above the line; NaN is now reported apart."""
    ev = Evidence(torch.zeros(4), torch.full((4,), 50.0),
                  torch.tensor([0.1, math.nan, 0.9, 0.2], dtype=torch.double), 100)
    label = plot_evidence_diagnostics(ev).axes[1].get_xlabel()
    assert "25.0% above 0.7" in label and "1 not estimable" in label
    clean = Evidence(torch.zeros(2), torch.ones(2), torch.tensor([0.1, 0.8]), 100)
    assert plot_evidence_diagnostics(clean).axes[1].get_xlabel() == "Pareto k-hat (50.0% above 0.7)"
