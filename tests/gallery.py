"""A gallery of model/guide pairs written the way Pyro users write them, each with an
independent hand-written torch reference for its log weights.

Every pair follows the library's contract: ``model(x)`` and ``guide(x)`` take the data tensor
``x`` (rows = datapoints), local latents live in ``pyro.plate("data", x.shape[0])`` and the
observations are ``obs=x``. The pairs use :mod:`pyro.distributions` (they are user code); the
references use :mod:`torch.distributions` and plain torch only, and read the same
``nn.Module`` / ``pyro.param`` parameters at call time.

``PAIRS`` maps a name to a zero-argument builder; builders are deterministic and may be called
repeatedly (they do not touch the global RNG; clear the param store between builds).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.nn import PyroModule, PyroParam
from torch import nn
from torch.distributions import (
    Bernoulli,
    Categorical,
    Gamma,
    LogNormal,
    MultivariateNormal,
    Normal,
    Poisson,
    constraints,
)

LogWeight = Callable[[torch.Tensor, dict[str, torch.Tensor]], torch.Tensor]


@dataclass
class Pair:
    """A model/guide pair with its data and hand-written references (see the module doc)."""

    name: str
    model: Callable
    guide: Callable
    data: torch.Tensor
    latents: list[str]
    vectorizable: bool
    log_weight: LogWeight | None
    exact_log_px: Callable[[torch.Tensor], torch.Tensor] | None
    guide_is_exact: bool
    global_latents: list[str]
    enumerated: list[str]
    discrete_guide_sites: list[str]
    notes: str
    guide_only_params: list[str] = field(default_factory=list)
    model_only_params: list[str] = field(default_factory=list)
    max_plate_nesting: int = 1
    # modules to put in eval() before comparing the model with ``log_weight`` (dropout)
    eval_modules: list[nn.Module] = field(default_factory=list)


# ---------------------------------------------------------------------------- helpers


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(g, *shape, scale=1.0):
    return scale * torch.randn(*shape, generator=g)


def _uniform(g, lo, hi, *shape):
    return lo + (hi - lo) * torch.rand(*shape, generator=g)


def _seeded(seed: int, make: Callable):
    """Build ``make()`` (nn.Module initialisation) under a fixed seed, leaving the global RNG
    as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make()


def _lin(layer: nn.Linear, h: torch.Tensor) -> torch.Tensor:
    """``layer(h)`` by hand."""
    out = h @ layer.weight.T
    return out if layer.bias is None else out + layer.bias


def _std_normal_lp(z: torch.Tensor, event_dims: int = 1) -> torch.Tensor:
    lp = Normal(torch.zeros_like(z), torch.ones_like(z)).log_prob(z)
    return lp.sum(tuple(range(-event_dims, 0))) if event_dims else lp


def _names(prefix: str, module: nn.Module) -> list[str]:
    """Param-store names Pyro gives ``pyro.module(prefix, module)``'s parameters."""
    return [f"{prefix}$$${n}" for n, _ in module.named_parameters()]


def _linear_gaussian_log_px(x, W, mu, noise_var):
    """log N(x; mu, W W^T + diag(noise_var)) per row."""
    cov = W @ W.T + torch.diag_embed(noise_var.expand(W.shape[0]))
    return MultivariateNormal(mu, covariance_matrix=cov).log_prob(x)


def _binary_data(seed, n, d, latent=2):
    g = _gen(seed)
    z = _randn(g, n, latent)
    logits = z @ _randn(g, latent, d, scale=2.0) + _randn(g, d, scale=0.5)
    return torch.bernoulli(torch.sigmoid(logits), generator=g)


def _gaussian_data(seed, n, d, latent):
    g = _gen(seed)
    z = _randn(g, n, latent)
    return z @ _randn(g, latent, d) + _randn(g, d) + _randn(g, n, d, scale=0.5)


# ---------------------------------------------------------------------- 1. vae_module


class Encoder(nn.Module):
    def __init__(self, x_dim, hidden, z_dim):
        super().__init__()
        self.fc1 = nn.Linear(x_dim, hidden)
        self.fc21 = nn.Linear(hidden, z_dim)
        self.fc22 = nn.Linear(hidden, z_dim)

    def forward(self, x):
        h = F.softplus(self.fc1(x))
        return self.fc21(h), torch.exp(self.fc22(h))


class Decoder(nn.Module):
    def __init__(self, z_dim, hidden, x_dim):
        super().__init__()
        self.fc1 = nn.Linear(z_dim, hidden)
        self.fc21 = nn.Linear(hidden, x_dim)

    def forward(self, z):
        return self.fc21(F.softplus(self.fc1(z)))  # logits


class TutorialVAE(nn.Module):
    """The Pyro VAE tutorial's module: ``model``/``guide`` methods, ``pyro.module`` calls."""

    def __init__(self, x_dim=10, hidden=8, z_dim=2, names=("decoder", "encoder")):
        super().__init__()
        self.z_dim = z_dim
        self.encoder = Encoder(x_dim, hidden, z_dim)
        self.decoder = Decoder(z_dim, hidden, x_dim)
        self.names = names

    def model(self, x):
        pyro.module(self.names[0], self.decoder)
        with pyro.plate("data", x.shape[0]):
            z_loc = x.new_zeros(torch.Size((x.shape[0], self.z_dim)))
            z_scale = x.new_ones(torch.Size((x.shape[0], self.z_dim)))
            z = pyro.sample("latent", dist.Normal(z_loc, z_scale).to_event(1))
            logits = self.decoder(z)
            pyro.sample("obs", dist.Bernoulli(logits=logits).to_event(1), obs=x)

    def guide(self, x):
        pyro.module(self.names[1], self.encoder)
        with pyro.plate("data", x.shape[0]):
            z_loc, z_scale = self.encoder(x)
            pyro.sample("latent", dist.Normal(z_loc, z_scale).to_event(1))


def _encode_ref(enc: Encoder, x):
    h = F.softplus(_lin(enc.fc1, x))
    return _lin(enc.fc21, h), torch.exp(_lin(enc.fc22, h))


def vae_module() -> Pair:
    """nn.Module VAE in the Pyro-tutorial style (``pyro.module`` in model and guide)."""
    vae = _seeded(1, TutorialVAE)
    x = _binary_data(101, 32, 10)

    def log_weight(x, v):
        z = v["latent"]
        logits = _lin(vae.decoder.fc21, F.softplus(_lin(vae.decoder.fc1, z)))
        loc, scale = _encode_ref(vae.encoder, x)
        return (_std_normal_lp(z) + Bernoulli(logits=logits).log_prob(x).sum(-1)
                - Normal(loc, scale).log_prob(z).sum(-1))

    return Pair(
        "vae_module", vae.model, vae.guide, x, ["latent"], True, log_weight, None, False,
        [], [], [], "Pyro VAE tutorial: nn.Module with model/guide methods, pyro.module per net",
        guide_only_params=_names("encoder", vae.encoder),
        model_only_params=_names("decoder", vae.decoder),
    )


# -------------------------------------------------------------------- 2. vae_batchnorm


class BNDecoder(nn.Module):
    def __init__(self, z_dim, hidden, x_dim):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(z_dim, hidden), nn.BatchNorm1d(hidden), nn.Softplus(),
            nn.Linear(hidden, x_dim),
        )

    def forward(self, z):
        return self.net(z)


def vae_batchnorm() -> Pair:
    """VAE whose decoder has ``nn.BatchNorm1d`` between layers (kept in eval mode)."""

    def make():
        vae = TutorialVAE(10, 8, 2, names=("bn_decoder", "bn_encoder"))
        vae.decoder = BNDecoder(2, 8, 10)
        bn = vae.decoder.net[1]
        with torch.no_grad():
            bn.running_mean.copy_(0.3 * torch.randn(8))
            bn.running_var.copy_(0.5 + torch.rand(8))
            bn.weight.copy_(1.0 + 0.2 * torch.randn(8))
            bn.bias.copy_(0.2 * torch.randn(8))
        vae.decoder.eval()
        return vae

    vae = _seeded(2, make)
    x = _binary_data(102, 28, 10)

    def log_weight(x, v):
        z = v["latent"]
        lin1, bn, _, lin2 = vae.decoder.net
        h = _lin(lin1, z)
        if bn.training:  # batch statistics, as BatchNorm1d uses them in train mode
            mean, var = h.mean(0), h.var(0, unbiased=False)
        else:
            mean, var = bn.running_mean, bn.running_var
        h = (h - mean) / torch.sqrt(var + bn.eps) * bn.weight + bn.bias
        logits = _lin(lin2, F.softplus(h))
        loc, scale = _encode_ref(vae.encoder, x)
        return (_std_normal_lp(z) + Bernoulli(logits=logits).log_prob(x).sum(-1)
                - Normal(loc, scale).log_prob(z).sum(-1))

    return Pair(
        "vae_batchnorm", vae.model, vae.guide, x, ["latent"], False, log_weight, None, False,
        [], [], [],
        "BatchNorm1d decoder, set to eval() by the builder so log p(x_n, z_n) is per-datapoint",
        guide_only_params=_names("bn_encoder", vae.encoder),
        model_only_params=_names("bn_decoder", vae.decoder),
    )


# -------------------------------------------------------------------------- 3. prodlda


class LDAEncoder(nn.Module):
    def __init__(self, vocab, topics, hidden):
        super().__init__()
        self.fc1 = nn.Linear(vocab, hidden)
        self.fcmu = nn.Linear(hidden, topics)
        self.fclv = nn.Linear(hidden, topics)

    def forward(self, docs):
        h = F.softplus(self.fc1(docs))
        return self.fcmu(h), (0.5 * self.fclv(h)).exp()


class LDADecoder(nn.Module):
    def __init__(self, vocab, topics):
        super().__init__()
        self.beta = nn.Linear(topics, vocab, bias=False)

    def forward(self, theta):
        return F.softmax(self.beta(theta), dim=1)  # as in the ProdLDA tutorial


class ProdLDA(nn.Module):
    """ProdLDA (Srivastava & Sutton 2017) in the Pyro tutorial's shape, without dropout/BN."""

    def __init__(self, vocab=12, topics=3, hidden=10):
        super().__init__()
        self.topics = topics
        self.encoder = LDAEncoder(vocab, topics, hidden)
        self.decoder = LDADecoder(vocab, topics)

    def model(self, docs):
        pyro.module("lda_decoder", self.decoder)
        with pyro.plate("data", docs.shape[0]):
            loc = docs.new_zeros((docs.shape[0], self.topics))
            scale = docs.new_ones((docs.shape[0], self.topics))
            logtheta = pyro.sample("logtheta", dist.Normal(loc, scale).to_event(1))
            theta = F.softmax(logtheta, -1)
            word_probs = self.decoder(theta)
            total_count = int(docs.sum(-1).max())
            pyro.sample("obs", dist.Multinomial(total_count, word_probs), obs=docs)

    def guide(self, docs):
        pyro.module("lda_encoder", self.encoder)
        with pyro.plate("data", docs.shape[0]):
            loc, scale = self.encoder(docs)
            pyro.sample("logtheta", dist.Normal(loc, scale).to_event(1))


def _lda_data(seed, n, vocab, topics, words):
    g = _gen(seed)
    topic_words = torch.softmax(_randn(g, topics, vocab, scale=2.0), -1)
    theta = torch.softmax(_randn(g, n, topics, scale=1.5), -1)
    idx = torch.multinomial(theta @ topic_words, words, replacement=True, generator=g)
    return torch.zeros(n, vocab).scatter_add_(1, idx, torch.ones(n, words))


def prodlda() -> Pair:
    """ProdLDA topic model: logistic-normal topics, ``F.softmax(..., dim=1)`` decoder."""
    lda = _seeded(3, ProdLDA)
    x = _lda_data(103, 24, 12, 3, 20)

    def log_weight(x, v):
        z = v["logtheta"]
        theta = torch.exp(z - torch.logsumexp(z, -1, keepdim=True))
        logits = theta @ lda.decoder.beta.weight.T
        log_probs = logits - torch.logsumexp(logits, -1, keepdim=True)
        n = x.sum(-1)
        log_lik = (torch.lgamma(n + 1) - torch.lgamma(x + 1).sum(-1)
                   + (x * log_probs).sum(-1))  # the multinomial pmf by hand
        h = F.softplus(_lin(lda.encoder.fc1, x))
        loc, scale = _lin(lda.encoder.fcmu, h), torch.exp(0.5 * _lin(lda.encoder.fclv, h))
        return _std_normal_lp(z) + log_lik - Normal(loc, scale).log_prob(z).sum(-1)

    return Pair(
        "prodlda", lda.model, lda.guide, x, ["logtheta"], False, log_weight, None, False,
        [], [], [],
        "ProdLDA tutorial: softmax(dim=1) decoder and Multinomial counts (20 words/doc)",
        guide_only_params=_names("lda_encoder", lda.encoder),
        model_only_params=_names("lda_decoder", lda.decoder),
    )


# --------------------------------------------------------------------- 4. softmax_dim1


class CategoricalVAE(nn.Module):
    """One-hot observations through ``F.softmax(h, dim=1)`` (or ``log_softmax`` logits)."""

    def __init__(self, classes=5, hidden=6, z_dim=2, use_logits=False):
        super().__init__()
        self.z_dim = z_dim
        self.use_logits = use_logits
        self.enc = nn.Linear(classes, hidden)
        self.enc_out = nn.Linear(hidden, 2 * z_dim)
        self.dec = nn.Sequential(nn.Linear(z_dim, hidden), nn.Tanh(), nn.Linear(hidden, classes))

    def model(self, x):
        pyro.module("cat_dec", self.dec)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(self.z_dim), 1.0).to_event(1))
            h = self.dec(z)
            if self.use_logits:
                obs_dist = dist.OneHotCategorical(logits=F.log_softmax(h, dim=1))
            else:
                obs_dist = dist.OneHotCategorical(probs=F.softmax(h, dim=1))
            pyro.sample("obs", obs_dist, obs=x)

    def guide(self, x):
        pyro.module("cat_enc", nn.ModuleList([self.enc, self.enc_out]))
        with pyro.plate("data", x.shape[0]):
            loc, log_scale = self.enc_out(torch.tanh(self.enc(x))).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))


def _categorical_vae_pair(name, use_logits, notes) -> Pair:
    vae = _seeded(4, lambda: CategoricalVAE(use_logits=use_logits))
    g = _gen(104)
    labels = torch.multinomial(torch.tensor([0.4, 0.25, 0.15, 0.1, 0.1]), 30, True, generator=g)
    x = F.one_hot(labels, 5).to(torch.get_default_dtype())

    def log_weight(x, v):
        z = v["z"]
        lin1, _, lin2 = vae.dec
        logits = _lin(lin2, torch.tanh(_lin(lin1, z)))
        log_lik = (x * torch.log_softmax(logits, -1)).sum(-1)
        loc, log_scale = _lin(vae.enc_out, torch.tanh(_lin(vae.enc, x))).chunk(2, -1)
        return _std_normal_lp(z) + log_lik - Normal(loc, log_scale.exp()).log_prob(z).sum(-1)

    return Pair(
        name, vae.model, vae.guide, x, ["z"], False, log_weight, None, False, [], [], [], notes,
        guide_only_params=["cat_enc$$$0.weight", "cat_enc$$$0.bias",
                           "cat_enc$$$1.weight", "cat_enc$$$1.bias"],
        model_only_params=_names("cat_dec", vae.dec),
    )


def softmax_dim1() -> Pair:
    """Categorical-output VAE: ``OneHotCategorical(probs=F.softmax(h, dim=1))``."""
    return _categorical_vae_pair(
        "softmax_dim1", False, "one-hot obs via OneHotCategorical(probs=F.softmax(h, dim=1))")


def log_softmax_dim1() -> Pair:
    """The same VAE with ``logits=F.log_softmax(h, dim=1)``: no simplex check can catch it."""
    return _categorical_vae_pair(
        "log_softmax_dim1", True,
        "one-hot obs via OneHotCategorical(logits=F.log_softmax(h, dim=1)); silent if vectorized")


# ----------------------------------------------------------------- 5. deep_exponential


def deep_exponential() -> Pair:
    """Deep exponential family: Gamma layers, Poisson counts, per-datapoint ``pyro.param``
    guide indexed by the plate's index."""
    a, b = 2.0, 1.0
    n, k1, k2, d = 20, 4, 6, 8
    g = _gen(105)
    W1_0, W2_0 = _uniform(g, 0.1, 0.6, k1, k2), _uniform(g, 0.1, 0.6, k2, d)
    loc1_0 = math.log(a / b) - 0.2 + _randn(g, n, k1, scale=0.1)
    loc2_0 = math.log(a / b) - 0.2 + _randn(g, n, k2, scale=0.1)
    z1 = torch._standard_gamma(torch.full((n, k1), a), generator=g) / b
    z2 = torch._standard_gamma(torch.full((n, k2), a), generator=g) * (z1 @ (1.5 * W1_0)) / a
    x = torch.poisson(z2 @ (2.0 * W2_0), generator=g)

    def params():
        W1 = pyro.param("def_W1", lambda: W1_0.clone(), constraint=constraints.positive)
        W2 = pyro.param("def_W2", lambda: W2_0.clone(), constraint=constraints.positive)
        return W1, W2

    def guide_params():
        return (
            pyro.param("def_q_loc1", lambda: loc1_0.clone()),
            pyro.param("def_q_scale1", lambda: torch.full((n, k1), 0.3),
                       constraint=constraints.positive),
            pyro.param("def_q_loc2", lambda: loc2_0.clone()),
            pyro.param("def_q_scale2", lambda: torch.full((n, k2), 0.3),
                       constraint=constraints.positive),
        )

    def model(x):
        W1, W2 = params()
        with pyro.plate("data", x.shape[0]):
            z1 = pyro.sample("z1", dist.Gamma(torch.full((k1,), a), torch.full((k1,), b))
                             .to_event(1))
            z2 = pyro.sample("z2", dist.Gamma(a, a / (z1 @ W1)).to_event(1))
            pyro.sample("x", dist.Poisson(z2 @ W2).to_event(1), obs=x)

    def guide(x):
        loc1, scale1, loc2, scale2 = guide_params()
        with pyro.plate("data", x.shape[0]) as idx:
            pyro.sample("z1", dist.LogNormal(loc1[idx], scale1[idx]).to_event(1))
            pyro.sample("z2", dist.LogNormal(loc2[idx], scale2[idx]).to_event(1))

    def log_weight(x, v):
        W1, W2 = params()
        loc1, scale1, loc2, scale2 = guide_params()
        z1, z2 = v["z1"], v["z2"]
        log_p = (Gamma(a, b).log_prob(z1).sum(-1)
                 + Gamma(a, a / (z1 @ W1)).log_prob(z2).sum(-1)
                 + Poisson(z2 @ W2).log_prob(x).sum(-1))
        log_q = (LogNormal(loc1, scale1).log_prob(z1).sum(-1)
                 + LogNormal(loc2, scale2).log_prob(z2).sum(-1))
        return log_p - log_q

    return Pair(
        "deep_exponential", model, guide, x, ["z1", "z2"], True, log_weight, None, False,
        [], [], [], "DEF (Ranganath 2015): Gamma layers, Poisson obs, local pyro.param[idx] guide",
        guide_only_params=["def_q_loc1", "def_q_scale1", "def_q_loc2", "def_q_scale2"],
        model_only_params=["def_W1", "def_W2"],
    )


# ------------------------------------------------------------------------------ 6-7. GMM


def _gmm_setup():
    g = _gen(106)
    true_locs = torch.tensor([[-2.0, 0.0], [2.0, 0.0], [0.0, 2.5]])
    labels = torch.multinomial(torch.tensor([0.5, 0.3, 0.2]), 36, True, generator=g)
    x = true_locs[labels] + _randn(g, 36, 2, scale=0.7)
    locs_0 = true_locs + _randn(g, 3, 2, scale=0.3)

    def params():
        weights = pyro.param("weights", lambda: torch.tensor([0.5, 0.3, 0.2]),
                             constraint=constraints.simplex)
        locs = pyro.param("locs", lambda: locs_0.clone())
        scale = pyro.param("scale", lambda: torch.tensor(0.8), constraint=constraints.positive)
        return weights, locs, scale

    def model(x):
        weights, locs, scale = params()
        with pyro.plate("data", x.shape[0]):
            assignment = pyro.sample("assignment", dist.Categorical(weights),
                                     infer={"enumerate": "parallel"})
            pyro.sample("obs", dist.Normal(locs[assignment], scale).to_event(1), obs=x)

    def joint(x):
        """(N, K) log p(x_n, assignment_n = k)."""
        weights, locs, scale = params()
        return torch.log(weights) + Normal(locs, scale).log_prob(x.unsqueeze(-2)).sum(-1)

    def exact_log_px(x):
        return torch.logsumexp(joint(x), -1)

    return x, params, model, joint, exact_log_px


def gmm_enumerated() -> Pair:
    """Gaussian mixture with ``pyro.param`` weights/locs/scale and a parallel-enumerated
    assignment; the guide samples nothing."""
    x, _, model, _, exact_log_px = _gmm_setup()

    def guide(x):
        pass

    return Pair(
        "gmm_enumerated", model, guide, x, [], False, lambda x, v: exact_log_px(x), exact_log_px,
        True, [], ["assignment"], [], "GMM tutorial: enumerate='parallel' assignment, empty guide",
    )


def gmm_categorical_guide() -> Pair:
    """The same GMM with a guide that samples the assignment from the exact responsibilities."""
    x, _, model, joint, exact_log_px = _gmm_setup()

    def guide(x):
        probs = torch.softmax(joint(x), -1)  # reads the model's pyro.params
        with pyro.plate("data", x.shape[0]):
            pyro.sample("assignment", dist.Categorical(probs=probs))

    def log_weight(x, v):
        lj = joint(x)
        a = v["assignment"].long()
        log_q = Categorical(probs=torch.softmax(lj, -1)).log_prob(a)
        return lj.gather(-1, a.unsqueeze(-1)).squeeze(-1) - log_q

    return Pair(
        "gmm_categorical_guide", model, guide, x, ["assignment"], True, log_weight, exact_log_px,
        True, [], [], ["assignment"],
        "GMM with a Categorical guide on the exact responsibilities (params shared with model)",
    )


# ------------------------------------------------------------------ 8. plain_functions


def plain_functions() -> Pair:
    """Factor analysis as plain functions with ``pyro.param`` and an amortized linear guide."""
    D, L = 5, 2
    x = _gaussian_data(108, 30, D, L)
    g = _gen(8)
    W_0, mu_0, psi_0 = _randn(g, D, L, scale=0.5), _randn(g, D, scale=0.1), _uniform(g, .3, .8, D)
    A_0 = _randn(g, L, D, scale=0.3)

    def model_params():
        return (pyro.param("W", lambda: W_0.clone()), pyro.param("mu", lambda: mu_0.clone()),
                pyro.param("psi", lambda: psi_0.clone(), constraint=constraints.positive))

    def guide_params():
        return (pyro.param("A", lambda: A_0.clone()), pyro.param("b", lambda: torch.zeros(L)),
                pyro.param("s", lambda: torch.full((L,), 0.5), constraint=constraints.positive))

    def model(x):
        W, mu, psi = model_params()
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(L), torch.ones(L)).to_event(1))
            pyro.sample("x", dist.Normal(z @ W.T + mu, psi.sqrt()).to_event(1), obs=x)

    def guide(x):
        A, b, s = guide_params()
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x @ A.T + b, s).to_event(1))

    def log_weight(x, v):
        (W, mu, psi), (A, b, s) = model_params(), guide_params()
        z = v["z"]
        return (_std_normal_lp(z) + Normal(z @ W.T + mu, psi.sqrt()).log_prob(x).sum(-1)
                - Normal(x @ A.T + b, s).log_prob(z).sum(-1))

    def exact_log_px(x):
        W, mu, psi = model_params()
        return _linear_gaussian_log_px(x, W, mu, psi)

    return Pair(
        "plain_functions", model, guide, x, ["z"], True, log_weight, exact_log_px, False,
        [], [], [], "factor analysis as plain functions with pyro.param (positive constraint)",
        guide_only_params=["A", "b", "s"], model_only_params=["W", "mu", "psi"],
    )


# ----------------------------------------------------------------------- 9. pyro_module


class LinearGaussian(PyroModule):
    """Probabilistic PCA as a PyroModule: ``PyroModule[nn.Linear]`` decoder, ``PyroParam``
    noise; ``forward`` is the model."""

    def __init__(self, x_dim=4, z_dim=2):
        super().__init__(name="pm_model")
        self.z_dim = z_dim
        self.decoder = PyroModule[nn.Linear](z_dim, x_dim)
        self.sigma = PyroParam(torch.tensor(0.6), constraint=constraints.positive)

    def forward(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(self.z_dim), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.decoder(z), self.sigma).to_event(1), obs=x)


class LinearGaussianGuide(PyroModule):
    def __init__(self, x_dim=4, z_dim=2):
        super().__init__(name="pm_guide")
        self.encoder = PyroModule[nn.Linear](x_dim, z_dim)
        self.scale = PyroParam(torch.full((z_dim,), 0.7), constraint=constraints.positive)

    def forward(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(self.encoder(x), self.scale).to_event(1))


def pyro_module() -> Pair:
    """``PyroModule`` model and guide (``PyroModule[nn.Linear]``, ``PyroParam``)."""
    model, guide = _seeded(9, lambda: (LinearGaussian(), LinearGaussianGuide()))
    x = _gaussian_data(109, 25, 4, 2)

    def log_weight(x, v):
        z = v["z"]
        return (_std_normal_lp(z)
                + Normal(_lin(model.decoder, z), model.sigma).log_prob(x).sum(-1)
                - Normal(_lin(guide.encoder, x), guide.scale).log_prob(z).sum(-1))

    def exact_log_px(x):
        return _linear_gaussian_log_px(x, model.decoder.weight, model.decoder.bias,
                                       model.sigma ** 2)

    return Pair(
        "pyro_module", model, guide, x, ["z"], True, log_weight, exact_log_px, False, [], [], [],
        "PyroModule model/guide with PyroModule[nn.Linear] and PyroParam (names 'pm_model.*')",
        guide_only_params=["pm_guide.encoder.weight", "pm_guide.encoder.bias", "pm_guide.scale"],
        model_only_params=["pm_model.decoder.weight", "pm_model.decoder.bias", "pm_model.sigma"],
    )


# ------------------------------------------------------------------------ 10. plate_dim2


def plate_dim2() -> Pair:
    """Data plate at ``dim=-2`` and a features plate at ``dim=-1``."""
    D, L = 4, 2
    x = _gaussian_data(110, 20, D, L)
    g = _gen(10)
    W_0, A_0 = _randn(g, D, L, scale=0.7), _randn(g, L, D, scale=0.3)

    def model_params():
        return (pyro.param("pd_W", lambda: W_0.clone()), pyro.param("pd_mu", lambda: x.mean(0)),
                pyro.param("pd_sigma", lambda: torch.tensor(0.8), constraint=constraints.positive))

    def guide_params():
        return (pyro.param("pd_A", lambda: A_0.clone()), pyro.param("pd_b", lambda: torch.zeros(L)),
                pyro.param("pd_s", lambda: torch.full((L,), 0.6), constraint=constraints.positive))

    def model(x):
        W, mu, sigma = model_params()
        with pyro.plate("data", x.shape[0], dim=-2):
            z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([1, L]).to_event(1))  # (N, 1, L)
            loc = (z * W).sum(-1) + mu  # (N, D)
            with pyro.plate("features", D, dim=-1):
                pyro.sample("x", dist.Normal(loc, sigma), obs=x)

    def guide(x):
        A, b, s = guide_params()
        with pyro.plate("data", x.shape[0], dim=-2):
            pyro.sample("z", dist.Normal((x @ A.T + b).unsqueeze(-2), s).to_event(1))

    def log_weight(x, v):
        (W, mu, sigma), (A, b, s) = model_params(), guide_params()
        z = v["z"].squeeze(-2)  # (N, L)
        return (_std_normal_lp(z) + Normal(z @ W.T + mu, sigma).log_prob(x).sum(-1)
                - Normal(x @ A.T + b, s).log_prob(z).sum(-1))

    def exact_log_px(x):
        W, mu, sigma = model_params()
        return _linear_gaussian_log_px(x, W, mu, sigma ** 2)

    return Pair(
        "plate_dim2", model, guide, x, ["z"], True, log_weight, exact_log_px, False, [], [], [],
        "data plate at dim=-2 with a nested features plate at dim=-1 (max_plate_nesting=2)",
        guide_only_params=["pd_A", "pd_b", "pd_s"], model_only_params=["pd_W", "pd_mu", "pd_sigma"],
        max_plate_nesting=2,
    )


# --------------------------------------------------------------------- 11. matrix_latent


def matrix_latent() -> Pair:
    """A (2, 3) matrix latent per datapoint (``.to_event(2)``), decoded via ``flatten(-2)``."""
    D = 5
    x = _gaussian_data(111, 20, D, 3)
    g = _gen(11)
    W_0, A_0 = _randn(g, D, 6, scale=0.4), _randn(g, 6, D, scale=0.3)

    def model_params():
        return (pyro.param("ml_W", lambda: W_0.clone()), pyro.param("ml_mu", lambda: x.mean(0)),
                pyro.param("ml_sigma", lambda: torch.tensor(0.9), constraint=constraints.positive))

    def guide_params():
        return (pyro.param("ml_A", lambda: A_0.clone()), pyro.param("ml_b", lambda: torch.zeros(6)),
                pyro.param("ml_s", lambda: torch.full((2, 3), 0.6),
                           constraint=constraints.positive))

    def model(x):
        W, mu, sigma = model_params()
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([2, 3]).to_event(2))
            pyro.sample("x", dist.Normal(z.flatten(-2) @ W.T + mu, sigma).to_event(1), obs=x)

    def guide(x):
        A, b, s = guide_params()
        with pyro.plate("data", x.shape[0]):
            loc = (x @ A.T + b).unflatten(-1, (2, 3))
            pyro.sample("z", dist.Normal(loc, s).to_event(2))

    def log_weight(x, v):
        (W, mu, sigma), (A, b, s) = model_params(), guide_params()
        z = v["z"].reshape(x.shape[0], 6)
        return (_std_normal_lp(z) + Normal(z @ W.T + mu, sigma).log_prob(x).sum(-1)
                - Normal(x @ A.T + b, s.reshape(6)).log_prob(z).sum(-1))

    def exact_log_px(x):
        W, mu, sigma = model_params()
        return _linear_gaussian_log_px(x, W, mu, sigma ** 2)

    return Pair(
        "matrix_latent", model, guide, x, ["z"], True, log_weight, exact_log_px, False,
        [], [], [], "matrix-valued local latent with two event dims (.to_event(2))",
        guide_only_params=["ml_A", "ml_b", "ml_s"], model_only_params=["ml_W", "ml_mu", "ml_sigma"],
    )


# --------------------------------------------------------------------------- 12. dropout


class DropoutDecoder(nn.Module):
    def __init__(self, z_dim, hidden, x_dim):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(z_dim, hidden), nn.ReLU(), nn.Dropout(0.2),
                                 nn.Linear(hidden, x_dim))

    def forward(self, z):
        return self.net(z)


def dropout() -> Pair:
    """VAE whose decoder has ``nn.Dropout(0.2)``, left in train mode."""

    def make():
        vae = TutorialVAE(10, 8, 2, names=("dropout_decoder", "dropout_encoder"))
        vae.decoder = DropoutDecoder(2, 8, 10)
        return vae

    vae = _seeded(12, make)
    x = _binary_data(112, 26, 10)

    def log_weight(x, v):  # the decoder as in eval mode: dropout is the identity
        z = v["latent"]
        lin1, _, _, lin2 = vae.decoder.net
        logits = _lin(lin2, torch.relu(_lin(lin1, z)))
        loc, scale = _encode_ref(vae.encoder, x)
        return (_std_normal_lp(z) + Bernoulli(logits=logits).log_prob(x).sum(-1)
                - Normal(loc, scale).log_prob(z).sum(-1))

    return Pair(
        "dropout", vae.model, vae.guide, x, ["latent"], True, log_weight, None, False, [], [], [],
        "Dropout(0.2) decoder in train mode; log_weight is the eval-mode (no dropout) reference",
        guide_only_params=_names("dropout_encoder", vae.encoder),
        model_only_params=_names("dropout_decoder", vae.decoder),
        eval_modules=[vae.decoder],
    )


# --------------------------------------------------------------------- 13. shared_module


class DMMStyle(nn.Module):
    """Deep-Markov-model style: one module holds encoder, combiner and decoder and is
    registered as ``pyro.module("dmm", self)`` by both model and guide."""

    def __init__(self, x_dim=6, z_dim=2, hidden=8):
        super().__init__()
        self.z_dim = z_dim
        self.encoder = nn.Sequential(nn.Linear(x_dim, hidden), nn.Tanh())  # guide only
        self.combiner = nn.Linear(hidden, 2 * z_dim)                      # guide only
        self.decoder = nn.Sequential(nn.Linear(z_dim, hidden), nn.Tanh(),
                                     nn.Linear(hidden, x_dim))             # model only
        self.obs_log_scale = nn.Parameter(torch.tensor(-0.3))              # model only

    def model(self, x):
        pyro.module("dmm", self)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.z_dim), 1.0).to_event(1))
            scale = self.obs_log_scale.exp()
            pyro.sample("x", dist.Normal(self.decoder(z), scale).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("dmm", self)
        loc, log_scale = self.combiner(self.encoder(x)).chunk(2, -1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, F.softplus(log_scale) + 0.05).to_event(1))


def shared_module() -> Pair:
    """One ``nn.Module`` registered by model and guide alike (deep Markov model idiom)."""
    dmm = _seeded(13, DMMStyle)
    x = _gaussian_data(113, 24, 6, 2)

    def log_weight(x, v):
        z = v["z"]
        lin1, _, lin2 = dmm.decoder
        mean = _lin(lin2, torch.tanh(_lin(lin1, z)))
        h = torch.tanh(_lin(dmm.encoder[0], x))
        loc, raw = _lin(dmm.combiner, h).chunk(2, -1)
        return (_std_normal_lp(z) + Normal(mean, dmm.obs_log_scale.exp()).log_prob(x).sum(-1)
                - Normal(loc, F.softplus(raw) + 0.05).log_prob(z).sum(-1))

    guide_only = [f"dmm$$${n}" for n, _ in dmm.named_parameters()
                  if n.startswith(("encoder.", "combiner."))]
    model_only = [f"dmm$$${n}" for n, _ in dmm.named_parameters()
                  if n.startswith("decoder.") or n == "obs_log_scale"]
    return Pair(
        "shared_module", dmm.model, dmm.guide, x, ["z"], True, log_weight, None, False,
        [], [], [], "DMM style: pyro.module('dmm', self) in model and guide; combiner guide-only",
        guide_only_params=guide_only, model_only_params=model_only,
    )


# ------------------------------------------------------------------ 14. shared_parameter


def shared_parameter() -> Pair:
    """Linear-Gaussian model and guide that both read the same ``pyro.param("c")``."""
    D, L = 4, 2
    x = _gaussian_data(114, 22, D, L)
    g = _gen(14)
    W_0, A_0 = _randn(g, D, L, scale=0.6), _randn(g, L, D, scale=0.3)
    c_0 = x.mean(0) + _randn(g, D, scale=0.2)

    def c():
        return pyro.param("c", lambda: c_0.clone())

    def model_params():
        return (pyro.param("sp_W", lambda: W_0.clone()),
                pyro.param("sp_sigma", lambda: torch.tensor(0.7), constraint=constraints.positive))

    def guide_params():
        return (pyro.param("sp_A", lambda: A_0.clone()),
                pyro.param("sp_s", lambda: torch.full((L,), 0.5), constraint=constraints.positive))

    def model(x):
        W, sigma = model_params()
        shift = c()
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(L), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ W.T + shift, sigma).to_event(1), obs=x)

    def guide(x):
        A, s = guide_params()
        shift = c()
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal((x - shift) @ A.T, s).to_event(1))

    def log_weight(x, v):
        (W, sigma), (A, s), shift = model_params(), guide_params(), c()
        z = v["z"]
        return (_std_normal_lp(z) + Normal(z @ W.T + shift, sigma).log_prob(x).sum(-1)
                - Normal((x - shift) @ A.T, s).log_prob(z).sum(-1))

    def exact_log_px(x):
        W, sigma = model_params()
        return _linear_gaussian_log_px(x, W, c(), sigma ** 2)

    return Pair(
        "shared_parameter", model, guide, x, ["z"], True, log_weight, exact_log_px, False,
        [], [], [], "one pyro.param('c') read by both model (offset) and guide (centering)",
        guide_only_params=["sp_A", "sp_s"], model_only_params=["sp_W", "sp_sigma"],
    )


# --------------------------------------------------------------------- 15. global_latent


def global_latent() -> Pair:
    """A global latent ``mu`` outside the data plate (the library should refuse it)."""
    g = _gen(115)
    x = 1.0 + _randn(g, 24) * 1.2

    def model(x):
        w = pyro.param("gl_w", lambda: torch.tensor(0.8))
        sigma = pyro.param("gl_sigma", lambda: torch.tensor(0.6), constraint=constraints.positive)
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(mu + w * z, sigma), obs=x)

    def guide(x):
        loc = pyro.param("gl_mu_loc", lambda: torch.tensor(0.5))
        scale = pyro.param("gl_mu_scale", lambda: torch.tensor(0.3),
                           constraint=constraints.positive)
        a = pyro.param("gl_a", lambda: torch.tensor(0.4))
        s = pyro.param("gl_s", lambda: torch.tensor(0.7), constraint=constraints.positive)
        mu = pyro.sample("mu", dist.Normal(loc, scale))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(a * (x - mu), s))

    return Pair(
        "global_latent", model, guide, x, ["z"], True, None, None, False, ["mu"], [], [],
        "global latent mu outside the data plate, local z amortized on x - mu",
        guide_only_params=["gl_mu_loc", "gl_mu_scale", "gl_a", "gl_s"],
        model_only_params=["gl_w", "gl_sigma"],
    )


# ------------------------------------------------------------------- 16. bernoulli_guide


def bernoulli_guide() -> Pair:
    """Binary switch ``s ~ Bernoulli(0.3)`` per datapoint with an exact Bernoulli guide."""
    g = _gen(116)
    s_true = torch.bernoulli(torch.full((30,), 0.3), generator=g)
    x = torch.where(s_true.bool(), 1.5, -1.0) + _randn(g, 30, scale=0.8)
    prior = 0.3

    def params():
        return (pyro.param("bg_locs", lambda: torch.tensor([-1.2, 1.3])),
                pyro.param("bg_scale", lambda: torch.tensor(0.9), constraint=constraints.positive))

    def joint(x):
        """(N, 2) log p(x_n, s_n = j)."""
        locs, scale = params()
        log_prior = torch.log(torch.tensor([1 - prior, prior]))
        return log_prior + Normal(locs, scale).log_prob(x.unsqueeze(-1))

    def model(x):
        locs, scale = params()
        with pyro.plate("data", x.shape[0]):
            s = pyro.sample("s", dist.Bernoulli(prior))
            pyro.sample("x", dist.Normal(locs[s.long()], scale), obs=x)

    def guide(x):
        lj = joint(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("s", dist.Bernoulli(logits=lj[:, 1] - lj[:, 0]))

    def log_weight(x, v):
        lj = joint(x)
        s = v["s"]
        log_q = Bernoulli(logits=lj[:, 1] - lj[:, 0]).log_prob(s)
        return lj.gather(-1, s.long().unsqueeze(-1)).squeeze(-1) - log_q

    def exact_log_px(x):
        return torch.logsumexp(joint(x), -1)

    return Pair(
        "bernoulli_guide", model, guide, x, ["s"], True, log_weight, exact_log_px, True,
        [], [], ["s"], "discrete Bernoulli switch sampled by an exact-posterior guide",
    )


PAIRS: dict[str, Callable[[], Pair]] = {
    f.__name__: f
    for f in (
        vae_module, vae_batchnorm, prodlda, softmax_dim1, deep_exponential, gmm_enumerated,
        gmm_categorical_guide, plain_functions, pyro_module, plate_dim2, matrix_latent, dropout,
        shared_module, shared_parameter, global_latent, bernoulli_guide, log_softmax_dim1,
    )
}
