"""Every model works with Trace_ELBO and the importance-weighted objectives, and every
diagnostic runs on the result."""

import math

import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO

from pyro_lvm.diagnostics import (
    AggregatePosterior,
    bayes_loop,
    gradient_snr,
    information,
    log_likelihood,
)
from pyro_lvm.infer import CIWAE, IWAE, MIWAE, PIWAE, fit
from pyro_lvm.models import PPCA, VAE, TwoLayerVAE

MODELS = {
    "ppca": lambda: PPCA(8, 2),
    "vae-bernoulli": lambda: VAE(8, 2, hidden=(6,)),
    "vae-gaussian-beta-mixture": lambda: VAE(8, 2, hidden=(6,), likelihood="gaussian",
                                             beta=4.0, kl_weight=0.5, prior="mixture"),
    "vae-contbern-vamp": lambda: VAE(8, 2, hidden=(6,), likelihood="continuous_bernoulli",
                                     prior="vamp"),
    "vae-learned-var-flow": lambda: VAE(8, 2, hidden=(6,), likelihood="gaussian_learned",
                                        prior="flow"),
    "two-layer": lambda: TwoLayerVAE(8, latent_dims=(3, 2), hidden=((6,), (4,))),
}
OBJECTIVES = {
    "elbo": Trace_ELBO,
    "iwae-dreg": lambda: IWAE(4, estimator="dreg"),
    "miwae-stl": lambda: MIWAE(2, num_outer=2, estimator="stl"),
    "ciwae": lambda: CIWAE(4, beta=0.5),
    "piwae": lambda: PIWAE(2, num_outer=2),
}


def data_for(name):
    torch.manual_seed(0)
    x = torch.rand(60, 8)
    if "bernoulli" in name or name == "two-layer":
        return (x < 0.4).float()
    return x


@pytest.mark.parametrize("objective", list(OBJECTIVES))
@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_trains_with_every_objective(name, objective):
    torch.manual_seed(1)
    model = MODELS[name]()
    x = data_for(name)
    history = fit(model.model, model.guide, x, loss=OBJECTIVES[objective](), epochs=3,
                  batch_size=20, optimizer=pyro.optim.Adam({"lr": 0.01}), progress=False)
    assert all(math.isfinite(v) for v in history.train_loss)


@pytest.mark.parametrize("name", list(MODELS))
def test_every_diagnostic_runs_on_every_model(name):
    torch.manual_seed(2)
    model = MODELS[name]()
    x = data_for(name)
    fit(model.model, model.guide, x, epochs=2, batch_size=30, progress=False)
    q = AggregatePosterior.from_guide(model.guide, x)
    assert q.sample(10).shape[0] == 10 and q.log_prob(q.sample(5)).isfinite().all()
    info = information(model.model, model.guide, x)
    assert abs(info.surgery_residual()) < 1e-4
    evidence = log_likelihood(model.model, model.guide, x[:10], num_particles=50)
    assert evidence.log_px.isfinite().all()
    loop = bayes_loop(model.model, model.guide, x, num_posterior_samples=19)
    assert 0 <= loop.p_value <= 1
    snr = gradient_snr(model.model, model.guide, x[:20], IWAE(2), num_samples=5)
    assert {"model", "guide"} <= set(snr.groups) <= {"model", "guide", "shared"}
