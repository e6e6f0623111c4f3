"""Guides for any model: site discovery, constrained supports, plates, registration."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO

from pyro_lvm.guides import AmortizedNormal, PerDatapointNormal, local_latent_sites
from pyro_lvm.infer import fit
from pyro_lvm.models import VAE


def gamma_poisson(x):
    """A hand-written model with a positive and a vector latent, data plate at dim -2."""
    with pyro.plate("data", x.shape[0], dim=-2):
        rate = pyro.sample("rate", dist.Gamma(2.0, 1.0))                     # shape (B, 1)
        w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([1, 3]).to_event(1))  # (B, 1, 3)
        with pyro.plate("features", x.shape[1], dim=-1):
            pyro.sample("x", dist.Poisson(rate * w.sum(-1).exp()), obs=x)


@pytest.mark.parametrize("make", [
    lambda m: AmortizedNormal(m, hidden=(16,)),
    lambda m: PerDatapointNormal(m, num_data=30),
])
def test_guides_cover_constrained_sites_and_nested_plates(make):
    x = torch.poisson(3 * torch.ones(30, 4))
    guide = make(gamma_poisson)
    values = guide(x)
    assert values["rate"].shape == (30, 1) and bool((values["rate"] > 0).all())
    assert values["w"].shape == (30, 1, 3)
    before = Trace_ELBO(num_particles=20).loss(gamma_poisson, guide, x)
    fit(gamma_poisson, guide, x, optimizer=pyro.optim.Adam({"lr": 0.05}), epochs=40,
        batch_size=10, progress=False)
    after = Trace_ELBO(num_particles=20).loss(gamma_poisson, guide, x)
    assert after < before


def test_local_latent_sites_reports_shapes_and_globals():
    def model(x):
        g = pyro.sample("g", dist.Normal(0.0, 1.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("s", dist.Dirichlet(torch.ones(4)))
            pyro.sample("x", dist.Normal(g, 1.0), obs=x)

    sites, dim, global_names = local_latent_sites(model, torch.zeros(7))
    assert [(s.name, s.shape) for s in sites] == [("s", (3,))]  # simplex: 3 free coordinates
    assert dim == -1 and global_names == ["g"]
    with pytest.raises(ValueError, match=r"latent site 'g' is outside pyro.plate\('data'\)"):
        AmortizedNormal(model)(torch.zeros(7))


def test_model_without_local_latents_is_refused():
    def model(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(0.0, 1.0), obs=x)

    with pytest.raises(ValueError, match="no latent sample site inside"):
        PerDatapointNormal(model, num_data=3)(torch.zeros(3))


def test_new_module_under_an_old_name_is_the_one_trained():
    """pyro.module alone would keep training the first module's tensors (a Pyro footgun)."""
    x = (torch.rand(50, 8) < 0.5).float()
    old = VAE(8, 2, hidden=(4,))
    Trace_ELBO().loss(old.model, old.guide, x)  # registers "vae.decoder$$$..." for `old`
    new = VAE(8, 2, hidden=(4,))
    before = new.decoder[0].weight.detach().clone()
    old_before = old.decoder[0].weight.detach().clone()
    fit(new.model, new.guide, x, optimizer=pyro.optim.Adam({"lr": 0.1}), epochs=2,
        progress=False)
    assert not torch.equal(new.decoder[0].weight, before)
    assert torch.equal(old.decoder[0].weight, old_before)


def test_bad_guide_arguments():
    with pytest.raises(ValueError, match="num_data must be a positive integer, got 0"):
        PerDatapointNormal(gamma_poisson, num_data=0)
    with pytest.raises(ValueError, match="init_scale must be a finite positive number"):
        AmortizedNormal(gamma_poisson, init_scale=-1.0)
    with pytest.raises(ValueError, match="activation must be one of"):
        AmortizedNormal(gamma_poisson, activation="sigmoidish")


@pytest.mark.parametrize("make", [
    lambda m: AmortizedNormal(m, hidden=(3,)), lambda m: PerDatapointNormal(m, num_data=5),
], ids=["AmortizedNormal", "PerDatapointNormal"])
def test_guides_follow_the_datas_dtype_then_refuse_another(make):
    vae = VAE(4, 2, hidden=(3,)).double()
    guide = make(vae.model)
    x = torch.zeros(5, 4, dtype=torch.float64)
    assert guide(x)["z"].dtype == torch.float64  # parameters created in the data's dtype
    assert all(p.dtype == torch.float64 for p in guide.parameters())
    with pytest.raises(ValueError, match=rf"^{type(guide).__name__}: the data x are "
                                         r"torch\.float32 but the parameters are "
                                         r"torch\.float64: .*x\.to\(torch\.float64\)"):
        guide(x.float())
