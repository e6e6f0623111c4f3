"""The gallery's hand-written torch references agree with Pyro's own log densities on the same
random draws, and each pair's declared properties (latents, vectorizability, parameter roles)
hold."""

import math

import pyro
import pytest
import torch
from gallery import PAIRS, Pair
from pyro import poutine
from pyro.infer import TraceEnum_ELBO
from pyro.poutine.util import site_is_subsample

REQUIRED = [
    "vae_module", "vae_batchnorm", "prodlda", "softmax_dim1", "deep_exponential",
    "gmm_enumerated", "gmm_categorical_guide", "plain_functions", "pyro_module", "plate_dim2",
    "matrix_latent", "dropout", "shared_module", "shared_parameter", "global_latent",
    "bernoulli_guide",
]

# What a vectorized (particle-plate) run of each non-vectorizable pair does.
#   ("raises", Error, message fragment)   the run fails loudly
#   ("silent",)                           the run succeeds with wrong per-particle numbers
NOT_VECTORIZABLE = {
    # BatchNorm1d reads a (P, N, H) input as (batch, channels=N, length=H)
    "vae_batchnorm": ("raises", RuntimeError, "running_mean should contain"),
    # softmax(dim=1) normalizes over the datapoints; Categorical then renormalizes the rows,
    # so the simplex check passes and the numbers are silently wrong
    "prodlda": ("silent",),
    "softmax_dim1": ("silent",),
    "log_softmax_dim1": ("silent",),
}

BUILT = {name: build() for name, build in PAIRS.items()}  # for parametrizing only
RTOL = 1e-4
P = 3  # particles in the vectorized checks


def _close(a, b, rtol=RTOL, atol=1e-4):
    torch.testing.assert_close(a, b, rtol=rtol, atol=atol)


def _in_data_plate(site):
    return any(f.name == "data" for f in site["cond_indep_stack"])


def _latent_sites(trace):
    return [name for name, site in trace.nodes.items()
            if site["type"] == "sample" and not site["is_observed"]
            and not site_is_subsample(site)]


def _eval(pair: Pair):
    for module in pair.eval_modules:
        module.eval()


def _traces(pair: Pair, particles=None):
    """Guide trace and model trace replayed on it (optionally inside a particle plate)."""
    x = pair.data
    if particles is None:
        guide_trace = poutine.trace(pair.guide).get_trace(x)
        model_trace = poutine.trace(poutine.replay(pair.model, trace=guide_trace)).get_trace(x)
        return guide_trace, model_trace
    with pyro.plate("_p", particles, dim=-(pair.max_plate_nesting + 1)):
        return _traces(pair)


def _split_log_prob(trace, nesting, particles):
    """(local, global): per-datapoint log density ((P,) N), and the rest ((P,) or ())."""
    trace.compute_log_prob()
    local, glob = 0.0, 0.0
    for site in trace.nodes.values():
        if site["type"] != "sample" or site_is_subsample(site):
            continue
        lp = site["log_prob"]
        if _in_data_plate(site):
            local = local + (lp.sum(-1) if nesting == 2 else lp)
        else:
            glob = glob + lp.flatten(start_dim=1 if particles else 0).sum(-1)
    return local, glob


def _trace_log_weight(pair, guide_trace, model_trace, particles=False):
    n = pair.max_plate_nesting
    m_local, m_glob = _split_log_prob(model_trace, n, particles)
    g_local, g_glob = _split_log_prob(guide_trace, n, particles)
    return m_local - g_local, m_glob - g_glob


def _values(guide_trace):
    return {name: guide_trace.nodes[name]["value"] for name in _latent_sites(guide_trace)}


def _param_names():
    return set(pyro.get_param_store().keys())


# ------------------------------------------------------------------------------ registry


def test_registry_has_required_pairs():
    assert set(REQUIRED) <= set(PAIRS)
    assert len(PAIRS) >= 14
    for name, build in PAIRS.items():
        assert build.__doc__, name


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_pair_metadata(name):
    pair = PAIRS[name]()
    x = pair.data
    assert pair.name == name
    assert x.is_floating_point() and 12 <= x.shape[0] <= 40
    assert pair.notes and "\n" not in pair.notes
    assert pair.max_plate_nesting in (1, 2)
    if name not in REQUIRED:
        assert not pair.vectorizable and name in NOT_VECTORIZABLE
    elif not pair.vectorizable and name != "gmm_enumerated":
        assert name in NOT_VECTORIZABLE

    guide_trace = poutine.trace(pair.guide).get_trace(x)
    model_trace = poutine.trace(poutine.replay(pair.model, trace=guide_trace)).get_trace(x)
    guide_latents = _latent_sites(guide_trace)
    local = [s for s in guide_latents if _in_data_plate(guide_trace.nodes[s])]
    assert local == pair.latents
    assert [s for s in guide_latents if s not in local] == pair.global_latents
    discrete = [s for s in guide_latents if not guide_trace.nodes[s]["fn"].has_rsample]
    assert discrete == pair.discrete_guide_sites
    enumerated = [s for s in _latent_sites(model_trace) if s not in guide_trace.nodes
                  and model_trace.nodes[s]["infer"].get("enumerate") == "parallel"]
    assert enumerated == pair.enumerated
    assert set(_latent_sites(model_trace)) == set(guide_latents) | set(enumerated)

    # the "data" plate: size x.shape[0], at dim -max_plate_nesting; observations are obs=x
    for tr in (guide_trace, model_trace):
        for s in pair.latents + pair.enumerated:
            if s in tr.nodes:
                (frame,) = [f for f in tr.nodes[s]["cond_indep_stack"] if f.name == "data"]
                assert frame.size == x.shape[0] and frame.dim == -pair.max_plate_nesting
    observed = [s for s in model_trace.nodes.values()
                if s["type"] == "sample" and s["is_observed"] and not site_is_subsample(s)]
    assert [s["value"] is x for s in observed] == [True]
    if pair.latents:
        assert guide_trace.nodes[pair.latents[0]]["value"].shape[0] == x.shape[0]


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_builders_are_repeatable(name):
    """A second build (fresh param store) gives the same data and the same log weights."""
    pair = PAIRS[name]()
    _eval(pair)
    values = _values(poutine.trace(pair.guide).get_trace(pair.data))
    first = pair.log_weight(pair.data, values) if pair.log_weight else None
    pyro.clear_param_store()
    again = PAIRS[name]()
    assert torch.equal(again.data, pair.data)
    if first is not None:
        torch.testing.assert_close(again.log_weight(again.data, values), first)


# --------------------------------------------------------------------- references vs Pyro


@pytest.mark.parametrize(
    "name", [n for n in sorted(PAIRS) if n != "gmm_enumerated" and BUILT[n].log_weight])
def test_log_weight_matches_pyro_traces(name):
    pair = PAIRS[name]()
    _eval(pair)
    guide_trace, model_trace = _traces(pair)
    reference = pair.log_weight(pair.data, _values(guide_trace))
    assert reference.shape == (pair.data.shape[0],)
    total = model_trace.log_prob_sum() - guide_trace.log_prob_sum()
    _close(total, reference.sum())
    local, glob = _trace_log_weight(pair, guide_trace, model_trace)
    assert isinstance(glob, float)  # no global latents where a reference exists
    _close(local, reference, atol=1e-3)


@pytest.mark.parametrize("name", [n for n in sorted(PAIRS) if n != "gmm_enumerated"
                                  and BUILT[n].guide_is_exact])
def test_exact_guide_gives_exact_log_px(name):
    pair = PAIRS[name]()
    exact = pair.exact_log_px(pair.data)
    assert exact.shape == (pair.data.shape[0],)
    for _ in range(3):
        values = _values(poutine.trace(pair.guide).get_trace(pair.data))
        _close(pair.log_weight(pair.data, values), exact)


def test_gmm_enumerated_brute_force():
    pair = PAIRS["gmm_enumerated"]()
    x = pair.data
    exact = pair.exact_log_px(x)
    w, locs, scale = (pyro.param(n).tolist() for n in ("weights", "locs", "scale"))
    for n in range(x.shape[0]):
        terms = []
        for k in range(3):
            sq = sum((x[n, d].item() - locs[k][d]) ** 2 for d in range(2))
            terms.append(math.log(w[k]) - sq / (2 * scale ** 2)
                         - 2 * math.log(scale) - math.log(2 * math.pi))
        top = max(terms)
        expected = top + math.log(sum(math.exp(t - top) for t in terms))
        assert abs(exact[n].item() - expected) < 1e-4 * max(1.0, abs(expected))
    assert pair.log_weight(x, {}).equal(exact)
    # Pyro's own enumeration agrees: the empty guide's ELBO is log p(x)
    loss = TraceEnum_ELBO(max_plate_nesting=1).differentiable_loss(pair.model, pair.guide, x)
    _close(-loss, exact.sum())


@pytest.mark.parametrize("name", [n for n in sorted(PAIRS) if BUILT[n].exact_log_px
                                  and not BUILT[n].guide_is_exact])
def test_exact_log_px_by_quadrature(name):
    """log p(x_n) against a grid over z through Pyro's model density (latent dim <= 2), and
    the ELBO never above it."""
    pair = PAIRS[name]()
    x, n = pair.data, pair.max_plate_nesting
    exact = pair.exact_log_px(x)
    (site,) = pair.latents
    single = poutine.trace(pair.guide).get_trace(x).nodes[site]["value"].shape
    with torch.no_grad():
        guide_trace, model_trace = _traces(pair, particles=500)
        elbo = _trace_log_weight(pair, guide_trace, model_trace, particles=True)[0].mean(0)
        assert (elbo <= exact + 1e-3).all()
        dim = single.numel() // x.shape[0]
        if dim > 2:
            pytest.skip(f"latent dim {dim}: quadrature too coarse, ELBO bound checked only")
        grid, step = torch.linspace(-6.0, 6.0, 121), 0.1
        z = torch.cartesian_prod(*[grid] * dim).reshape(-1, dim)
        z = z.reshape(-1, *[1] * (len(single) - 1), dim).expand(-1, *single)
        with pyro.plate("_p", z.shape[0], dim=-(n + 1)):
            trace = poutine.trace(poutine.condition(pair.model, data={site: z})).get_trace(x)
        joint, _ = _split_log_prob(trace, n, particles=True)
        quad = torch.logsumexp(joint, 0) + dim * math.log(step)
    _close(quad, exact, rtol=1e-4, atol=2e-3)


# ---------------------------------------------------------------------------- vectorizing


@pytest.mark.parametrize("name", [n for n in sorted(PAIRS) if BUILT[n].vectorizable])
def test_vectorized_matches_per_particle(name):
    pair = PAIRS[name]()
    _eval(pair)
    x = pair.data
    single = {k: v.shape for k, v in _values(poutine.trace(pair.guide).get_trace(x)).items()}
    guide_trace, model_trace = _traces(pair, particles=P)
    local, glob = _trace_log_weight(pair, guide_trace, model_trace, particles=True)
    assert local.shape == (P, x.shape[0])
    values = _values(guide_trace)
    for k, v in values.items():  # a global latent gets shape (P, 1, ...) from the plate
        assert v.shape == (P, *single[k]) or (k in pair.global_latents
                                               and v.numel() == P * single[k].numel())
    for p in range(P):
        vals = {k: v[p] for k, v in values.items()}
        if pair.log_weight is not None:
            _close(local[p], pair.log_weight(x, vals), atol=1e-3)
        # and against Pyro itself, run once per particle on that particle's values
        vals = {k: v.reshape(single[k]) for k, v in vals.items()}
        g = poutine.trace(poutine.condition(pair.guide, data=vals)).get_trace(x)
        m = poutine.trace(poutine.condition(pair.model, data=vals)).get_trace(x)
        loc_p, glob_p = _trace_log_weight(pair, g, m)
        _close(local[p], loc_p, atol=1e-3)
        _close(torch.as_tensor(glob)[p] if pair.global_latents else torch.tensor(glob),
               torch.as_tensor(glob_p))


@pytest.mark.parametrize("name", sorted(NOT_VECTORIZABLE))
def test_not_vectorizable_fails_as_documented(name):
    pair = PAIRS[name]()
    assert not pair.vectorizable
    _eval(pair)
    kind = NOT_VECTORIZABLE[name]
    if kind[0] == "raises":
        with pytest.raises(kind[1], match=kind[2]):
            _traces(pair, particles=P)
        return
    guide_trace, model_trace = _traces(pair, particles=P)  # no error ...
    local, _ = _trace_log_weight(pair, guide_trace, model_trace, particles=True)
    values = _values(guide_trace)
    reference = torch.stack([pair.log_weight(pair.data, {k: v[p] for k, v in values.items()})
                             for p in range(P)])
    assert local.shape == reference.shape and torch.isfinite(local).all()
    assert (local - reference).abs().max() > 0.1  # ... but wrong numbers
    # while one particle at a time is right
    g, m = _traces(pair)
    _close(_trace_log_weight(pair, g, m)[0], pair.log_weight(pair.data, _values(g)), atol=1e-3)


def test_dropout_is_active_in_train_mode():
    pair = PAIRS["dropout"]()
    (decoder,) = pair.eval_modules
    assert decoder.training
    g = poutine.trace(pair.guide).get_trace(pair.data)
    runs = [_trace_log_weight(pair, g, poutine.trace(poutine.replay(pair.model, trace=g))
                              .get_trace(pair.data))[0] for _ in range(2)]
    assert not torch.allclose(runs[0], runs[1])


# ----------------------------------------------------------------------- parameter roles


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_param_roles(name):
    """guide_only params get no gradient from the model's log density (latents held fixed),
    model_only params none from the guide's; every other param gets both."""
    pair = PAIRS[name]()
    _eval(pair)
    x = pair.data
    guide_trace = poutine.trace(pair.guide).get_trace(x)
    fixed = {k: v.detach() for k, v in _values(guide_trace).items()}
    model_trace = poutine.trace(poutine.condition(pair.model, data=fixed)).get_trace(x)
    store = dict(pyro.get_param_store().named_parameters())
    assert set(pair.guide_only_params) | set(pair.model_only_params) <= set(store)
    assert not set(pair.guide_only_params) & set(pair.model_only_params)
    names = sorted(store)

    def used(log_prob):
        if not torch.is_tensor(log_prob) or not log_prob.requires_grad:  # 0.0: no sites
            return set()
        grads = torch.autograd.grad(log_prob, [store[n] for n in names], allow_unused=True)
        return {n for n, gr in zip(names, grads, strict=True) if gr is not None}

    by_model, by_guide = used(model_trace.log_prob_sum()), used(guide_trace.log_prob_sum())
    assert set(pair.guide_only_params) <= by_guide - by_model
    assert set(pair.model_only_params) <= by_model - by_guide
    shared = set(names) - set(pair.guide_only_params) - set(pair.model_only_params)
    assert shared <= by_model
    if _latent_sites(guide_trace):
        assert shared <= by_guide
