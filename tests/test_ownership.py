"""Parameters belong to whoever uses them: DReG and PIWAE on pairs that share a module or a
parameter, against hand-written torch on the same random draws."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn
from torch.distributions import Normal

from pyro_lvm.contract import param_roles
from pyro_lvm.diagnostics import gradient_snr
from pyro_lvm.infer import IWAE, PIWAE, importance_sample


@pytest.fixture(autouse=True, scope="module")
def _double():
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


class SharedModule(nn.Module):
    """Deep-Markov-model style: one module, registered by model and guide alike; the encoder
    is read only by the guide, the decoder only by the model, ``c`` (optionally) by both."""

    def __init__(self, share_c=False):
        super().__init__()
        self.encoder = nn.Linear(3, 4)
        self.decoder = nn.Linear(2, 3)
        self.c = nn.Parameter(torch.tensor([0.3, -0.2, 0.1]))
        self.share_c = share_c

    def model(self, x):
        pyro.module("dmm", self)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.decoder(z) + self.c, 0.7).to_event(1), obs=x)

    def encode(self, x, c):
        h = self.encoder(x - c if self.share_c else x)
        return h[..., :2], nn.functional.softplus(h[..., 2:]) + 0.1

    def guide(self, x):
        pyro.module("dmm", self)
        loc, scale = self.encode(x, self.c)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))


def _grads(pair, loss, x, seed):
    pyro.set_rng_seed(seed)
    loss.loss_and_grads(pair.model, pair.guide, x)
    out = {n: -p.grad.clone() for n, p in pair.named_parameters()}  # gradient of the bound
    pair.zero_grad(set_to_none=True)
    return out


def _hand_written(pair, x, z, groups, estimator):
    """Gradients of the bound by hand. ``groups``: (M, K); z: (M*K, B, 2) the draws."""
    m, k = groups
    loc, scale = pair.encode(x, pair.c)
    eps = ((z - loc) / scale).detach()
    z_live = loc + scale * eps                                 # the path through the guide

    def log_p(zz, weight, bias, c):
        return (Normal(0.0, 1.0).log_prob(zz).sum(-1)
                + Normal(nn.functional.linear(zz, weight, bias) + c, 0.7).log_prob(x).sum(-1))

    dec = (pair.decoder.weight, pair.decoder.bias, pair.c)
    if estimator == "dreg":  # DReG stops the direct dependence of log q on the guide
        log_q = Normal(loc.detach(), scale.detach()).log_prob(z_live).sum(-1)
    else:
        log_q = Normal(loc, scale).log_prob(z_live).sum(-1)
    # the guide's part: through z only, the model's parameters held fixed
    lw_path = (log_p(z_live, *(t.detach() for t in dec)) - log_q).reshape(m, k, -1)
    direct = log_p(z.detach(), *dec).reshape(m, k, -1)         # the model's direct part
    w = torch.softmax(lw_path, 1).detach()                     # within groups
    if estimator == "dreg":
        guide_part = (w.pow(2) * lw_path).sum() / m
        model_w = w / m
    else:  # PIWAE, reparam: the guide follows MIWAE, the model IWAE over all M*K
        guide_part = ((lw_path.logsumexp(1) - math.log(k)).mean(0)).sum()
        model_w = torch.softmax(lw_path.reshape(m * k, -1), 0).reshape(m, k, -1).detach()
    surrogate = guide_part + (model_w * direct).sum()
    grads = torch.autograd.grad(surrogate, list(pair.parameters()), allow_unused=True)
    return {n: (g if g is not None else torch.zeros_like(p))
            for (n, p), g in zip(pair.named_parameters(), grads, strict=True)}


@pytest.mark.parametrize("share_c", [False, True], ids=["shared-module", "shared-parameter"])
@pytest.mark.parametrize("loss,groups,estimator", [
    (IWAE(5, estimator="dreg"), (1, 5), "dreg"),
    (PIWAE(3, num_outer=2), (2, 3), "piwae"),
], ids=["dreg", "piwae"])
def test_gradients_match_hand_written_on_the_same_draws(share_c, loss, groups, estimator):
    torch.manual_seed(0)
    pair = SharedModule(share_c)
    x = torch.randn(6, 3)
    got = _grads(pair, loss, x, seed=3)
    pyro.set_rng_seed(3)
    sample = importance_sample(pair.model, pair.guide, (x,), num_particles=math.prod(groups))
    want = _hand_written(pair, x, sample.values("z").detach(), groups, estimator)
    for name in want:
        torch.testing.assert_close(got.get(name, torch.zeros_like(want[name])), want[name],
                                   rtol=1e-6, atol=1e-8, msg=name)
    # the encoder's DReG gradient is not the plain IWAE gradient (it was, when ownership was
    # decided by registration: every parameter of "dmm" counted as the model's)
    if estimator == "dreg":
        plain = _grads(pair, IWAE(5), x, seed=3)
        assert not torch.allclose(plain["encoder.weight"], got["encoder.weight"])


def test_roles_are_decided_by_use_not_registration():
    pair = SharedModule(share_c=True)
    x = torch.randn(4, 3)
    sample = importance_sample(pair.model, pair.guide, (x,), num_particles=2)
    roles = param_roles(sample.model_trace, sample.guide_trace)
    names = {id(p): n for n, p in pair.named_parameters()}
    assert sorted(names[id(p)] for p in roles.guide) == ["encoder.bias", "encoder.weight"]
    assert sorted(names[id(p)] for p in roles.model) == ["decoder.bias", "decoder.weight"]
    assert [names[id(p)] for p in roles.shared] == ["c"]
    snr = gradient_snr(pair.model, pair.guide, x, IWAE(2, estimator="dreg"), num_samples=6)
    assert snr.group_of["dmm$$$encoder.weight"] == "guide"
    assert snr.group_of["dmm$$$c"] == "shared"
    assert math.isfinite(snr.groups["guide"])


def test_dreg_warns_when_the_guide_owns_no_parameter():
    w = pyro.param("w", torch.tensor(0.5))

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(w * z, 1.0), obs=x)

    def guide(x):  # the exact posterior, computed from the model's own parameter
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(w * x / (1 + w**2), (1 + w**2) ** -0.5))

    with pytest.warns(UserWarning, match="the guide has no parameters of its own"):
        IWAE(4, estimator="dreg").loss_and_grads(model, guide, torch.randn(5))
