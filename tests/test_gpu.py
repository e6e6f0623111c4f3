"""Every path on a CUDA device: models, guides, objectives, fit, the diagnostics and the plots
of results computed there. Skipped without CUDA (benchmarks/gpu_check.py times them)."""

import math

import pyro
import pyro.optim
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.parametrize("objective", ["elbo", "dreg"])
def test_vae_fits_and_is_diagnosed_on_the_gpu(objective):
    from pyro_lvm.diagnostics import (
        AggregatePosterior,
        bayes_loop,
        information,
        log_likelihood,
    )
    from pyro_lvm.diagnostics.plots import (
        plot_aggregate_vs_prior,
        plot_evidence_diagnostics,
        plot_kl_per_dim,
    )
    from pyro_lvm.infer import IWAE, evaluate_loss, fit
    from pyro_lvm.models import VAE

    x = (torch.rand(300, 16) < 0.3).float()
    vae = VAE(16, 3, hidden=(16,))
    loss = None if objective == "elbo" else IWAE(4, estimator="dreg")
    h = fit(vae.model, vae.guide, DataLoader(TensorDataset(x), batch_size=64), loss=loss,
            optimizer=pyro.optim.Adam({"lr": 0.01}), epochs=2, device="cuda", progress=False)
    assert math.isfinite(h.train_loss[-1])
    assert next(vae.parameters()).device.type == "cuda"
    xc = x.cuda()
    assert math.isfinite(evaluate_loss(vae.model, vae.guide, xc))
    ev = log_likelihood(vae.model, vae.guide, xc[:50], num_particles=100)
    info = information(vae.model, vae.guide, xc)
    q = AggregatePosterior.from_guide(vae.guide, xc)
    loop = bayes_loop(vae.model, vae.guide, xc)
    assert bool(torch.isfinite(ev.log_px).all()) and math.isfinite(float(info.rate))
    assert 0 <= loop.p_value <= 1
    assert plot_evidence_diagnostics(ev).axes and plot_kl_per_dim(info).axes
    assert plot_aggregate_vs_prior(q.sample(200).cpu(), q.sample(200).cpu()).axes


def test_ppca_closed_form_and_exact_posterior_on_the_gpu():
    from pyro_lvm.diagnostics import log_likelihood
    from pyro_lvm.models import PPCA

    ppca = PPCA(6, 2).cuda()
    x = ppca.sample(200)
    fitted = PPCA(6, 2).cuda().fit_closed_form(x)
    ev = log_likelihood(fitted.model, fitted.exact_posterior, x, num_particles=10)
    torch.testing.assert_close(ev.log_px.float(), fitted.log_likelihood(x).float(),
                               atol=1e-3, rtol=1e-4)
