"""The importance-weighted objectives against hand-written torch on the same random draws,
against Pyro's Trace_ELBO, and against PPCA's closed forms."""

import math
import re
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F
from fixtures import random_ppca
from pyro.infer import Trace_ELBO
from torch import nn
from torch.distributions import Normal

from pyro_lvm.handlers import minibatch
from pyro_lvm.infer import CIWAE, IWAE, MIWAE, PIWAE, Estimator, ImportanceWeightedELBO
from pyro_lvm.models import PPCA, VAE
from pyro_lvm.nn import register_module


@pytest.fixture(autouse=True, scope="module")
def _double():
    """This module compares to 1e-5 and tighter: it works in double precision."""
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


class LinearGaussian(nn.Module):
    """x ~ N(W z + c, diag sigma^2), z ~ N(0, I); guide N(A x + b, diag softplus(s)^2)."""

    def __init__(self, data_dim=3, latent_dim=2):
        super().__init__()
        self.dec = nn.ParameterDict({
            "W": nn.Parameter(torch.randn(data_dim, latent_dim)),
            "c": nn.Parameter(0.1 * torch.randn(data_dim)),
            "log_sigma": nn.Parameter(0.2 * torch.randn(data_dim))})
        self.enc = nn.ParameterDict({
            "A": nn.Parameter(0.3 * torch.randn(latent_dim, data_dim)),
            "b": nn.Parameter(0.1 * torch.randn(latent_dim)),
            "s": nn.Parameter(0.1 * torch.randn(latent_dim) - 0.5)})
        self.draws = []

    def model(self, x):
        register_module("lg.dec", self.dec)
        d = self.dec
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ d["W"].T + d["c"], d["log_sigma"].exp())
                        .to_event(1), obs=x)

    def encode(self, x):
        e = self.enc
        return x @ e["A"].T + e["b"], F.softplus(e["s"]).expand(x.shape[0], -1)

    def guide(self, x):
        register_module("lg.enc", self.enc)
        loc, scale = self.encode(x)
        with pyro.plate("data", x.shape[0]):
            self.draws.append(pyro.sample("z", dist.Normal(loc, scale).to_event(1)))

    # -- the same objectives written out by hand, from the recorded draws ------------------
    def reference(self, x, m, k, beta, estimator, partitioned):
        z_pyro = self.draws[-1].detach()
        loc, scale = self.encode(x)
        eps = ((z_pyro - loc) / scale).detach()
        z = loc + scale * eps  # (M*K, B, d): the same draws, differentiable
        d = self.dec
        log_joint = (Normal(z @ d["W"].T + d["c"], d["log_sigma"].exp()).log_prob(x).sum(-1)
                     + Normal(0.0, 1.0).log_prob(z).sum(-1))
        lw = log_joint - Normal(loc, scale).log_prob(z).sum(-1)
        lw_stl = log_joint - Normal(loc.detach(), scale.detach()).log_prob(z).sum(-1)
        return reference_objective(lw, lw_stl, m, k, beta, estimator, partitioned,
                                   list(self.dec.values()), list(self.enc.values()))


def reference_objective(lw, lw_stl, m, k, beta, estimator, partitioned, theta, phi):
    """Loss and gradients of the importance-weighted family, by the papers' formulas, from
    log weights (lw) and log weights with q's parameters stopped (lw_stl), shape (M*K, B)."""
    lw, lw_stl = lw.reshape(m, k, -1), lw_stl.reshape(m, k, -1)
    iwae = (torch.logsumexp(lw, 1) - math.log(k)).mean(0)
    w = torch.softmax(lw, 1).detach()
    if beta is None:
        bound, coef, coef_dreg = iwae, w / m, w**2 / m
    else:
        bound = beta * lw.mean((0, 1)) + (1 - beta) * iwae
        coef = beta / (m * k) + (1 - beta) * w / m
        coef_dreg = beta / (m * k) + (1 - beta) * w**2 / m
    model_bound = bound
    if partitioned:
        model_bound = torch.logsumexp(lw.reshape(m * k, -1), 0) - math.log(m * k)
    guide_objective = {"reparam": bound.sum(), "stl": (coef * lw_stl).sum(),
                       "dreg": (coef_dreg * lw_stl).sum()}[estimator]
    g_theta = torch.autograd.grad(-model_bound.sum(), theta, retain_graph=True)
    g_phi = torch.autograd.grad(-guide_objective, phi)
    return -model_bound.sum().item(), dict(zip(theta + phi, g_theta + g_phi, strict=True))


OBJECTIVES = {
    "IWAE": dict(m=1, k=6, beta=None, partitioned=False),
    "MIWAE": dict(m=3, k=4, beta=None, partitioned=False),
    "CIWAE": dict(m=1, k=6, beta=0.3, partitioned=False),
    "PIWAE": dict(m=3, k=4, beta=None, partitioned=True),
}


def assert_matches_reference(net, name, estimator, x, seed):
    """Run the objective on ``net`` and compare loss and every gradient with net.reference."""
    o = OBJECTIVES[name]
    elbo = ImportanceWeightedELBO(o["k"], num_outer=o["m"], beta=o["beta"], estimator=estimator,
                                  partitioned=o["partitioned"])
    params = list(net.dec.values()) + list(net.enc.values())
    # a first call decides, once per pair, whether DReG may take its one-backward form:
    # the compared call is the second, the form every later step takes
    _loss_and_grads(elbo, net.model, net.guide, x, params, seed=seed + 100)
    loss, grads = _loss_and_grads(elbo, net.model, net.guide, x, params, seed=seed)
    ref_loss, ref_grads = net.reference(x, o["m"], o["k"], o["beta"], estimator,
                                        o["partitioned"])
    assert loss == pytest.approx(ref_loss, rel=1e-10)
    for p, g in zip(params, grads, strict=True):
        torch.testing.assert_close(g, ref_grads[p], rtol=1e-5, atol=1e-7)
    return elbo, params, loss, grads


@pytest.mark.parametrize("estimator", ["reparam", "stl", "dreg"])
@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_loss_and_every_gradient_match_hand_written_torch(name, estimator):
    torch.manual_seed(0)
    lg = LinearGaussian()
    x = torch.randn(5, 3)
    elbo, params, loss, grads = assert_matches_reference(lg, name, estimator, x, seed=1)

    # the three entry points agree on the same seed
    for p in params:
        p.grad = None
    pyro.set_rng_seed(1)
    diff = elbo.differentiable_loss(lg.model, lg.guide, x)
    diff.backward()
    pyro.set_rng_seed(1)
    assert elbo.loss(lg.model, lg.guide, x) == pytest.approx(loss, rel=1e-12)
    assert diff.item() == pytest.approx(loss, rel=1e-12)
    for p, g in zip(params, grads, strict=True):
        torch.testing.assert_close(p.grad, g, rtol=1e-10, atol=1e-12)


def _loss_and_grads(elbo, model, guide, x, params, seed=3):
    for p in params:
        p.grad = None
    pyro.set_rng_seed(seed)
    loss = elbo.loss_and_grads(model, guide, x)
    return loss, [p.grad.clone() for p in params]


@pytest.mark.parametrize("ours, theirs", [
    (IWAE(1), Trace_ELBO()),
    # (Pyro's guess of max_plate_nesting draws random numbers: give it the number instead)
    (CIWAE(7, beta=1.0), Trace_ELBO(7, vectorize_particles=True, max_plate_nesting=1)),
    (MIWAE(1, num_outer=5), Trace_ELBO(5, vectorize_particles=True, max_plate_nesting=1)),
], ids=["K=1", "CIWAE(beta=1)", "MIWAE(M,K=1)"])
def test_special_cases_equal_trace_elbo(ours, theirs):
    torch.manual_seed(0)
    lg = LinearGaussian()
    x = torch.randn(6, 3)
    params = list(lg.dec.values()) + list(lg.enc.values())
    loss, grads = _loss_and_grads(ours, lg.model, lg.guide, x, params)
    ref, ref_grads = _loss_and_grads(theirs, lg.model, lg.guide, x, params)
    # Trace_ELBO divides by its number of particles; so does the mean over particles here
    assert loss == pytest.approx(ref, rel=1e-10)
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-8, atol=1e-10)


@pytest.fixture
def exact_ppca():
    truth = random_ppca(5, 2, seed=0)
    x = truth.sample(40)
    return PPCA(5, 2).fit_closed_form(x), x  # amortized guide set to the exact posterior


@pytest.mark.parametrize("k", [1, 5, 50])
@pytest.mark.parametrize("estimator", ["reparam", "stl", "dreg"])
def test_exact_posterior_makes_the_bound_exact_for_every_k(exact_ppca, k, estimator):
    ppca, x = exact_ppca
    exact = -ppca.log_likelihood(x).sum().item()
    for elbo in (IWAE(k, estimator=estimator), MIWAE(k, num_outer=3, estimator=estimator)):
        for seed in range(3):
            pyro.set_rng_seed(seed)
            assert elbo.loss(ppca.model, ppca.guide, x) == pytest.approx(exact, rel=1e-9)


def test_exact_posterior_stl_and_dreg_guide_gradients_have_zero_variance(exact_ppca):
    ppca, x = exact_ppca
    guide_params = list(ppca.encoder.parameters())
    spread = {}
    for estimator in ("reparam", "stl", "dreg"):
        elbo = IWAE(10, estimator=estimator)
        draws = torch.stack([torch.cat([g.flatten() for g in _loss_and_grads(
            elbo, ppca.model, ppca.guide, x, guide_params, seed=s)[1]]) for s in range(8)])
        spread[estimator] = draws.std(0).max().item()
    assert spread["reparam"] > 1e-2
    assert spread["stl"] < 1e-9 and spread["dreg"] < 1e-9


def test_minibatch_scale_is_applied_outside_the_logsumexp():
    """With particles fixed per datapoint (Delta guide indexed by the plate), the minibatch
    losses of a partition of the data average exactly to the full-data loss. A subsample
    scale inside the logsumexp (as in RenyiELBO) breaks this."""
    n, k = 70, 4
    table = torch.randn(k, n)

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 0.5), obs=x)

    calls = []

    def guide(x):  # particle j is row j of the table (any rotation: the bound sums them all),
        # drawn from a density q = N(0, 1) that the Delta carries
        with pyro.plate("data", x.shape[0]) as idx:
            row = table[len(calls) % k, idx]
            pyro.sample("z", dist.Delta(row, log_density=Normal(0.0, 1.0).log_prob(row)))
        calls.append(None)

    x = torch.randn(n)
    elbo = IWAE(k, vectorize=False)
    full = elbo.loss(model, guide, x)
    losses = []
    for batch in torch.randperm(n).split(7):
        with minibatch(batch, n):
            losses.append(elbo.loss(model, guide, x[batch]))
    assert sum(losses) / len(losses) == pytest.approx(full, rel=1e-10)
    # the per-datapoint bound by hand
    lw = Normal(table, 0.5).log_prob(x)  # log p(z) - log q(z) = 0: the same N(0, 1)
    assert full == pytest.approx(-(lw.logsumexp(0) - math.log(k)).sum().item(), rel=1e-10)


def test_expected_minibatch_loss_equals_full_data_loss_with_random_draws():
    torch.manual_seed(0)
    lg = LinearGaussian()
    x = torch.randn(40, 3)
    elbo = IWAE(8)
    full = torch.tensor([elbo.loss(lg.model, lg.guide, x) for _ in range(400)])
    mini = []
    for _ in range(400):
        batch = torch.randperm(40)[:8]
        with minibatch(batch, 40):
            mini.append(elbo.loss(lg.model, lg.guide, x[batch]))
    mini = torch.tensor(mini)
    se = math.sqrt(mini.var() / len(mini) + full.var() / len(full))
    assert abs(mini.mean() - full.mean()) < 4 * se


class TwoLayer(nn.Module):
    """Two stochastic layers: z2 ~ N(0, 1), z1 ~ N(a z2, 1), x ~ N(W z1 + c, sigma^2);
    bottom-up guide q(z1 | x) q(z2 | z1), whose second layer reads z1."""

    def __init__(self):
        super().__init__()
        self.dec = nn.ParameterDict({"a": nn.Parameter(torch.randn(2, 1)),
                                     "W": nn.Parameter(torch.randn(3, 2)),
                                     "log_sigma": nn.Parameter(torch.zeros(3))})
        self.enc = nn.ParameterDict({"A": nn.Parameter(0.3 * torch.randn(2, 3)),
                                     "s1": nn.Parameter(torch.zeros(2)),
                                     "C": nn.Parameter(0.3 * torch.randn(1, 2)),
                                     "s2": nn.Parameter(torch.zeros(1))})
        self.draws = []

    def model(self, x):
        register_module("two.dec", self.dec)
        d = self.dec
        with pyro.plate("data", x.shape[0]):
            z2 = pyro.sample("z2", dist.Normal(torch.zeros(1), 1.0).to_event(1))
            z1 = pyro.sample("z1", dist.Normal(z2 @ d["a"].T, 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z1 @ d["W"].T, d["log_sigma"].exp()).to_event(1),
                        obs=x)

    def guide(self, x):
        register_module("two.enc", self.enc)
        e = self.enc
        with pyro.plate("data", x.shape[0]):
            z1 = pyro.sample("z1", dist.Normal(x @ e["A"].T, F.softplus(e["s1"])).to_event(1))
            z2 = pyro.sample("z2", dist.Normal(z1 @ e["C"].T, F.softplus(e["s2"])).to_event(1))
            self.draws.append((z1, z2))

    def reference(self, x, m, k, beta, estimator, partitioned):
        d, e = self.dec, self.enc
        z1_p, z2_p = (t.detach() for t in self.draws[-1])
        loc1, s1 = x @ e["A"].T, F.softplus(e["s1"])
        z1 = loc1 + s1 * ((z1_p - loc1) / s1).detach()
        loc2, s2 = z1 @ e["C"].T, F.softplus(e["s2"])
        z2 = loc2 + s2 * ((z2_p - loc2) / s2).detach()
        log_joint = (Normal(0.0, 1.0).log_prob(z2).sum(-1)
                     + Normal(z2 @ d["a"].T, 1.0).log_prob(z1).sum(-1)
                     + Normal(z1 @ d["W"].T, d["log_sigma"].exp()).log_prob(x).sum(-1))
        log_q = Normal(loc1, s1).log_prob(z1).sum(-1) + Normal(loc2, s2).log_prob(z2).sum(-1)
        # q's parameters stopped, the path through z1 into q(z2 | z1) kept
        log_q_stl = (Normal(loc1.detach(), s1.detach()).log_prob(z1).sum(-1)
                     + Normal(z1 @ e["C"].detach().T, s2.detach()).log_prob(z2).sum(-1))
        return reference_objective(log_joint - log_q, log_joint - log_q_stl, m, k, beta,
                                   estimator, partitioned, list(d.values()), list(e.values()))


@pytest.mark.parametrize("estimator", ["reparam", "stl", "dreg"])
@pytest.mark.parametrize("name", ["IWAE", "CIWAE", "PIWAE"])
def test_two_layer_guide_gradients_match_hand_written_torch(name, estimator):
    torch.manual_seed(0)
    assert_matches_reference(TwoLayer(), name, estimator, torch.randn(5, 3), seed=2)


def _one_backward_verdicts(elbo) -> list:
    return [value for _, value in elbo._one_backward._store.values()]


@pytest.mark.parametrize("net, name, verdict", [
    (LinearGaussian, "IWAE", True), (LinearGaussian, "MIWAE", True),
    (LinearGaussian, "CIWAE", True),
    # z2 is built from z1: a hook on each draw would weight the path through z1 twice
    (TwoLayer, "IWAE", False), (TwoLayer, "CIWAE", False)])
def test_dreg_takes_one_backward_pass_where_that_is_exact(net, name, verdict):
    torch.manual_seed(0)
    elbo, *_ = assert_matches_reference(net(), name, "dreg", torch.randn(5, 3), seed=4)
    assert _one_backward_verdicts(elbo) == [verdict]


def test_one_backward_dreg_of_a_flow_guide_falls_back_to_two_passes():
    """Pyro's autoregressive flow caches its base draw: log q reads that draw, not z, and a
    hook on z would miss the path through log q. The first step's comparison finds that, and
    later steps keep the two-pass gradient (compared with a fresh objective's first step,
    which returns the two-pass gradient whatever it finds)."""
    import pyro.distributions.transforms as T

    torch.manual_seed(0)
    ppca = PPCA(4, 2)
    x = ppca.sample(6)
    iaf = T.affine_autoregressive(2, hidden_dims=[8])

    def guide(x):
        pyro.module("iaf", iaf)
        loc = pyro.param("base_loc", torch.zeros(2))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.TransformedDistribution(dist.Normal(loc, 1.0).to_event(1),
                                                          [iaf]))

    elbo = IWAE(5, estimator="dreg")
    pyro.set_rng_seed(0)
    elbo.loss_and_grads(ppca.model, guide, x)  # the first step: creates and checks
    assert _one_backward_verdicts(elbo) == [False]
    params = [p for _, p in sorted(pyro.get_param_store().named_parameters())]
    second = _loss_and_grads(elbo, ppca.model, guide, x, params, seed=1)[1]
    fresh = _loss_and_grads(IWAE(5, estimator="dreg"), ppca.model, guide, x, params, seed=1)[1]
    for g, f in zip(second, fresh, strict=True):
        torch.testing.assert_close(g, f, rtol=1e-6, atol=1e-8)


# -- plate structures ---------------------------------------------------------------------
def nested_model(x):  # data plate at dim -2, an inner feature plate at dim -1
    w = pyro.param("w", torch.ones(x.shape[1]))
    with pyro.plate("data", x.shape[0], dim=-2):
        z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([x.shape[0], 1]))
        with pyro.plate("features", x.shape[1], dim=-1):
            pyro.sample("x", dist.Normal(z * w, 1.0), obs=x)
    pyro.sample("prior_on_w", dist.Normal(0.0, 10.0).expand([x.shape[1]]).to_event(1),
                obs=w)  # an observed site outside every plate


def nested_guide(x):
    loc = pyro.param("loc", torch.zeros(x.shape[0], 1))
    with pyro.plate("data", x.shape[0], dim=-2) as idx:
        pyro.sample("z", dist.Normal(loc[idx], 0.7))


def nested_reference(x, k):
    """The same IWAE bound written out: per datapoint over the feature plate."""
    torch.manual_seed(11)
    pyro.set_rng_seed(11)
    loc, w = pyro.param("loc"), pyro.param("w")
    z = Normal(loc, 0.7).sample((k,))  # (K, N, 1): the draw order of the guide
    lw = (Normal(0.0, 1.0).log_prob(z).squeeze(-1) + Normal(z * w, 1.0).log_prob(x).sum(-1)
          - Normal(loc, 0.7).log_prob(z).squeeze(-1))
    outer = Normal(0.0, 10.0).log_prob(w).sum()
    return -((lw.logsumexp(0) - math.log(k)).sum() + outer).item()


def test_nested_plates_data_plate_at_dim_minus_2_and_a_site_outside_plates():
    x = torch.randn(6, 4)
    elbo = IWAE(5)
    pyro.set_rng_seed(11)
    loss = elbo.loss(nested_model, nested_guide, x)
    assert loss == pytest.approx(nested_reference(x, 5), rel=1e-10)


def test_global_latent_sites_are_refused():
    def model(x):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(mu, 1.0), obs=x)

    def guide(x):
        pyro.sample("mu", dist.Normal(pyro.param("m", torch.tensor(0.0)), 1.0))

    with pytest.raises(ValueError, match="latent site 'mu' is outside pyro.plate"):
        IWAE(4).loss(model, guide, torch.randn(5))


def test_non_reparameterizable_guide_site_is_refused():
    def model(x):
        with pyro.plate("data", x.shape[0]):
            c = pyro.sample("c", dist.Bernoulli(0.5))
            pyro.sample("x", dist.Normal(c, 1.0), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("c", dist.Bernoulli(0.3))

    with pytest.raises(ValueError, match="guide site 'c' .*Bernoulli.* cannot be reparam"):
        IWAE(4).loss_and_grads(model, guide, torch.randn(5))


def test_guide_missing_a_model_site_is_refused():
    def model(x):
        with pyro.plate("data", x.shape[0]):
            a = pyro.sample("a", dist.Normal(0.0, 1.0))
            b = pyro.sample("b", dist.Normal(a, 1.0))
            pyro.sample("x", dist.Normal(b, 1.0), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("a", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match="does not sample the model's latent site 'b'"):
        IWAE(4).loss(model, guide, torch.randn(5))


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_particles=0), "num_particles must be a positive integer"),
    (dict(num_outer=-1), "num_outer must be a positive integer"),
    (dict(beta=1.5), r"beta must be a number in \[0, 1\]"),
    (dict(estimator="vimco"), "estimator must be one of"),
    (dict(partitioned=True, beta=0.5), "cannot be combined"),
])
def test_invalid_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ImportanceWeightedELBO(**kwargs)


# -- one spelling: K = num_particles first, M = num_outer by keyword -----------------------
VARIANTS = {
    "IWAE": (lambda: IWAE(6, estimator="dreg"), (6, 1, None, "dreg", False)),
    "MIWAE": (lambda: MIWAE(4, num_outer=3), (4, 3, None, "reparam", False)),
    "CIWAE": (lambda: CIWAE(6, beta=0.3, estimator="stl"), (6, 1, 0.3, "stl", False)),
    "PIWAE": (lambda: PIWAE(4, num_outer=3, estimator="dreg"), (4, 3, None, "dreg", True)),
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_named_variants_are_classes_equal_to_the_general_objective(name):
    make, (k, m, beta, estimator, partitioned) = VARIANTS[name]
    loss = make()
    cls = {"IWAE": IWAE, "MIWAE": MIWAE, "CIWAE": CIWAE, "PIWAE": PIWAE}
    assert isinstance(loss, ImportanceWeightedELBO) and isinstance(loss, cls[name])
    assert not any(isinstance(loss, c) for n, c in cls.items() if n != name)
    assert (loss.num_particles, loss.num_outer, loss.total_particles, loss.beta,
            loss.estimator, loss.partitioned) == (k, m, m * k, beta, estimator, partitioned)
    assert loss.estimator is Estimator(estimator)
    assert repr(loss) == (f"{name}(num_particles={k}, num_outer={m}, beta={beta}, "
                          f"estimator={estimator!r})")
    general = ImportanceWeightedELBO(k, num_outer=m, beta=beta, estimator=estimator,
                                     partitioned=partitioned)
    torch.manual_seed(0)
    lg = LinearGaussian()
    x = torch.randn(5, 3)
    params = list(lg.dec.values()) + list(lg.enc.values())
    value, grads = _loss_and_grads(loss, lg.model, lg.guide, x, params)
    ref, ref_grads = _loss_and_grads(general, lg.model, lg.guide, x, params)
    assert value == ref
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, rtol=0, atol=0)


def test_num_particles_is_k_and_total_particles_is_what_is_drawn():
    loss = MIWAE(1, num_outer=5, max_plate_nesting=1)
    assert (loss.num_particles, loss.num_outer, loss.total_particles) == (1, 5, 5)
    torch.manual_seed(0)
    lg = LinearGaussian()
    loss.loss(lg.model, lg.guide, torch.randn(4, 3))
    assert lg.draws[-1].shape == (5, 4, 2)  # M*K particles per datapoint, in one plate
    # Pyro's ELBO counts its particle plate in max_plate_nesting: the plate of M*K, not of K
    assert loss.max_plate_nesting == 2 and IWAE(1, max_plate_nesting=1).max_plate_nesting == 1
    with pytest.warns(DeprecationWarning, match="K is num_particles"):
        assert MIWAE(4, num_outer=3).num_inner == 4


LEGACY = [  # (old spelling, new spelling, the old call as the warning writes it)
    (lambda: MIWAE(3, 4), lambda: MIWAE(4, num_outer=3), "MIWAE(3, 4)",
     "MIWAE(4, num_outer=3)"),
    (lambda: PIWAE(3, 4), lambda: PIWAE(4, num_outer=3), "PIWAE(3, 4)",
     "PIWAE(4, num_outer=3)"),
    (lambda: PIWAE(3, 4, "stl"), lambda: PIWAE(4, num_outer=3, estimator="stl"),
     "PIWAE(3, 4, 'stl')", "PIWAE(4, num_outer=3, estimator='stl')"),
    (lambda: MIWAE(3, num_particles=4, estimator="dreg"),
     lambda: MIWAE(4, num_outer=3, estimator="dreg"),
     "MIWAE(3, num_particles=4, estimator='dreg')", "MIWAE(4, num_outer=3, estimator='dreg')"),
    (lambda: IWAE(6, "dreg"), lambda: IWAE(6, estimator="dreg"), "IWAE(6, 'dreg')",
     "IWAE(6, estimator='dreg')"),
    (lambda: CIWAE(6, 0.3), lambda: CIWAE(6, beta=0.3), "CIWAE(6, 0.3)", "CIWAE(6, beta=0.3)"),
    (lambda: ImportanceWeightedELBO(4, 3, 0.3),
     lambda: ImportanceWeightedELBO(4, num_outer=3, beta=0.3),
     "ImportanceWeightedELBO(4, 3, 0.3)", "ImportanceWeightedELBO(4, num_outer=3, beta=0.3)"),
]


@pytest.mark.parametrize("old, new, old_call, new_call", LEGACY,
                         ids=[case[2] for case in LEGACY])
def test_old_spelling_warns_and_builds_the_same_objective(old, new, old_call, new_call):
    with pytest.warns(DeprecationWarning) as record:
        old_loss = old()
    assert len(record) == 1
    message = str(record[0].message)
    assert message.startswith(f"{old_call} reads its arguments in the old order")
    assert f"write {new_call} " in message
    assert record[0].filename == __file__  # points at the caller
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        new_loss = new()
    assert type(old_loss) is type(new_loss) and repr(old_loss) == repr(new_loss)
    assert ((old_loss.num_particles, old_loss.num_outer, old_loss.beta, old_loss.estimator,
             old_loss.partitioned) == (new_loss.num_particles, new_loss.num_outer,
                                       new_loss.beta, new_loss.estimator, new_loss.partitioned))
    torch.manual_seed(0)
    lg = LinearGaussian()
    x = torch.randn(5, 3)
    pyro.set_rng_seed(2)
    value = old_loss.loss(lg.model, lg.guide, x)
    pyro.set_rng_seed(2)
    assert value == new_loss.loss(lg.model, lg.guide, x)


@pytest.mark.parametrize("call, match", [
    (lambda: IWAE(6, "dreg", estimator="stl"), "multiple values for argument 'estimator'"),
    (lambda: MIWAE(3, 4, num_particles=2), "multiple values for argument 'num_particles'"),
    (lambda: IWAE(6, "dreg", "x"), r"IWAE\(\) takes at most 2 positional arguments"),
    (lambda: MIWAE(8), "missing 1 required keyword-only argument: 'num_outer'"),
    (lambda: CIWAE(8), "missing 1 required keyword-only argument: 'beta'"),
    (lambda: IWAE(8, beta=0.5), "unexpected keyword argument 'beta'"),
])
def test_ambiguous_or_incomplete_spellings_are_type_errors(call, match):
    with pytest.raises(TypeError, match=match):
        call()


def test_estimator_is_an_enum_of_strings():
    assert [e.value for e in Estimator] == ["reparam", "stl", "dreg"]
    assert Estimator.DREG == "dreg" and f"{Estimator.STL}" == "stl"
    assert IWAE(3, estimator=Estimator.STL).estimator is Estimator.STL
    with pytest.raises(ValueError, match=re.escape(
            "estimator must be one of 'reparam', 'stl', 'dreg' (pyro_lvm.infer.Estimator), "
            "got 'vimco'")):
        IWAE(3, estimator="vimco")
    with pytest.warns(DeprecationWarning, match="use pyro_lvm.infer.Estimator"):
        from pyro_lvm.infer.iwae import ESTIMATORS
    assert ESTIMATORS == ("reparam", "stl", "dreg")


# -- end to end ----------------------------------------------------------------------------
def _ppca_data():
    truth = random_ppca(5, 2, seed=1, noise_variance=0.3)
    x = truth.sample(1000)
    return x, PPCA(5, 2).fit_closed_form(x).log_likelihood(x).mean().item()


def test_fit_with_dreg_iwae_reaches_the_ppca_optimum():
    from pyro_lvm.infer import fit

    x, best = _ppca_data()
    torch.manual_seed(0)
    ppca = PPCA(5, 2)
    optimizer = pyro.optim.ClippedAdam({"lr": 0.05, "lrd": 0.01 ** (1 / 1000)})
    fit(ppca.model, ppca.guide, x, loss=IWAE(8, estimator="dreg"), optimizer=optimizer,
        epochs=100, batch_size=100, progress=False)
    assert -1e-4 < best - ppca.log_likelihood(x).mean().item() < 0.02


def test_plain_torch_loop_with_differentiable_loss():
    x, best = _ppca_data()
    torch.manual_seed(0)
    ppca = PPCA(5, 2)
    elbo = MIWAE(4, num_outer=2, estimator="stl")
    optimizer = torch.optim.Adam(ppca.parameters(), lr=0.05)
    schedule = torch.optim.lr_scheduler.ExponentialLR(optimizer, 0.01 ** (1 / 1000))
    for _ in range(100):  # epochs of 10 minibatches, scaled to the data set by the handler
        for batch in torch.randperm(1000).split(100):
            with minibatch(batch, num_data=1000):
                loss = elbo.differentiable_loss(ppca.model, ppca.guide, x[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    assert -1e-4 < best - ppca.log_likelihood(x).mean().item() < 0.02


def test_rerun_of_a_two_layer_guide_sees_the_same_subsampled_rows():
    """STL/DReG rerun the guide at detached particles; with pyro.plate(subsample_size=B) the
    rerun must use the same rows (its log q equals the guide's, value for value)."""
    from pyro_lvm.infer.importance import direct_log_q, importance_sample, site_log_probs

    torch.manual_seed(0)
    table = torch.randn(50, 2)

    def model(x):
        with pyro.plate("data", 50, subsample_size=5) as idx:
            z2 = pyro.sample("z2", dist.Normal(0.0, 1.0))
            z1 = pyro.sample("z1", dist.Normal(z2, 1.0))
            pyro.sample("x", dist.Normal(z1, 1.0), obs=x[idx])

    def guide(x):
        with pyro.plate("data", 50, subsample_size=5) as idx:
            z1 = pyro.sample("z1", dist.Normal(table[idx, 0], 1.0))
            pyro.sample("z2", dist.Normal(z1 + table[idx, 1], 1.0))

    x = torch.randn(50)
    sample = importance_sample(model, guide, (x,), num_particles=4)
    log_q = sum(site_log_probs(sample)["guide"].values())
    torch.testing.assert_close(direct_log_q(sample, guide, (x,)), log_q)


def test_one_objective_serves_models_of_different_plate_depth():
    elbo = IWAE(3)
    torch.manual_seed(0)
    lg = LinearGaussian()
    elbo.loss(lg.model, lg.guide, torch.randn(4, 3))
    pyro.set_rng_seed(0)
    elbo.loss(nested_model, nested_guide, torch.randn(6, 4))  # one plate deeper


def test_renyi_elbo_is_refused_with_minibatches():
    from pyro.infer import RenyiELBO

    from pyro_lvm.infer import fit

    ppca = PPCA(4, 2)
    with pytest.raises(ValueError, match="RenyiELBO is biased under minibatches"):
        fit(ppca.model, ppca.guide, ppca.sample(20), loss=RenyiELBO(), batch_size=5,
            progress=False)


# -- checks that run once per pair ---------------------------------------------------------------
def test_pair_checks_run_on_the_first_draw_only_unless_asked(monkeypatch):
    from pyro_lvm.infer import particles

    calls = []
    real = particles.check_site_shape
    monkeypatch.setattr(particles, "check_site_shape", lambda *a: calls.append(1) or real(*a))
    vae = VAE(6, 2, hidden=(4,))
    x = (torch.rand(8, 6) < 0.5).to(torch.get_default_dtype())
    elbo = IWAE(3)
    elbo.loss(vae.model, vae.guide, x)
    first = len(calls)
    assert first > 0
    for _ in range(3):
        elbo.loss(vae.model, vae.guide, x)
    assert len(calls) == first
    with particles.always_validate():
        elbo.loss(vae.model, vae.guide, x)
    assert len(calls) > first  # the one draw, checked again


def test_observed_values_are_checked_on_every_batch():
    vae = VAE(6, 2, hidden=(4,))
    x = (torch.rand(8, 6) < 0.5).to(torch.get_default_dtype())
    elbo = IWAE(3)
    elbo.loss(vae.model, vae.guide, x)  # the first draw: Pyro's own validation
    bad = x.clone()
    bad[5, 2] = 0.5  # a later batch that is not binary: Bernoulli's log-density is wrong there
    with pytest.raises(ValueError, match=r"observed site 'x' has value 0.5 at index \[5, 2\], "
                                         r"outside the support of Bernoulli"):
        elbo.loss(vae.model, vae.guide, bad)


def test_an_argument_that_goes_invalid_later_is_named_under_always_validate():
    from pyro_lvm.infer.particles import always_validate

    def model(x):
        s = pyro.param("s", torch.tensor(1.0))  # unconstrained: may go negative
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, s), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(0.0, 1.0))

    x = torch.randn(5)
    elbo = IWAE(2)
    elbo.loss(model, guide, x)
    with torch.no_grad():
        pyro.param("s").copy_(torch.tensor(-1.0))
    assert not math.isfinite(elbo.loss(model, guide, x))  # unchecked: a non-finite loss
    with always_validate(), pytest.raises(ValueError, match="scale"):
        elbo.loss(model, guide, x)


@pytest.mark.parametrize("m", [1, 3])
def test_dreg_with_one_particle_per_group_is_stl(m):
    """K = 1: every normalized weight is 1, so DReG's squared weights are STL's (Tucker et
    al. 2019): the same gradient, taken as STL's single surrogate."""
    torch.manual_seed(0)
    lg = LinearGaussian()
    x = torch.randn(5, 3)
    params = list(lg.dec.values()) + list(lg.enc.values())
    dreg = ImportanceWeightedELBO(1, num_outer=m, estimator="dreg")
    stl = ImportanceWeightedELBO(1, num_outer=m, estimator="stl")
    loss, grads = _loss_and_grads(dreg, lg.model, lg.guide, x, params, seed=2)
    ref, ref_grads = _loss_and_grads(stl, lg.model, lg.guide, x, params, seed=2)
    assert loss == ref
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-6, atol=1e-9)
    assert _one_backward_verdicts(dreg) == []  # nothing to check


@pytest.mark.parametrize("bad", [0.5, -1.0, 2.0, float("nan"), float("inf")])
def test_the_data_check_finds_every_value_outside_a_bernoullis_support(bad):
    from pyro_lvm.infer.particles import check_observed_value

    x = (torch.rand(10, 6) < 0.5).float()
    fn = dist.Bernoulli(logits=torch.zeros(4, 10, 6)).to_event(1)  # particles x rows
    check_observed_value("x", fn, x, "demo")  # binary: passes
    x[3, 4] = bad
    with pytest.raises(ValueError, match=r"observed site 'x' has value .* at index \[3, 4\]"):
        check_observed_value("x", fn, x, "demo")
