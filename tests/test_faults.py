"""Issue 17, items 1 and 2: guide sites the model does not have are refused by every objective
and diagnostic (never mixed into log w), and numbers that are not finite are flagged."""

import math
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from pyro.infer.autoguide import AutoNormal

from pyro_lvm.contract import PairError, pair_sites
from pyro_lvm.diagnostics import (
    AggregatePosterior,
    Evidence,
    GradientSNR,
    InferenceGaps,
    bayes_loop,
    energy_test,
    gradient_snr,
    inference_gaps,
    information,
    log_likelihood,
    pareto_khat,
    prior_gap,
)
from pyro_lvm.infer import IWAE, ImportanceWeightedELBO, evaluate_loss, fit
from pyro_lvm.models import PPCA
from pyro_lvm.report import Report
from pyro_lvm.report_sections import bayes_loop_section


@pytest.fixture
def ppca():
    torch.manual_seed(3)
    return PPCA(4, 2)


# -- item 1: a guide with a site the model does not have ------------------------------------

def _aux():
    return dist.Normal(0.0, 1.0)


def inside(ppca):
    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", ppca.posterior(x))
            pyro.sample("aux", _aux())
    return guide


def outside_before(ppca):
    def guide(x):
        pyro.sample("aux", _aux())
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", ppca.posterior(x))
    return guide


def outside_after(ppca):
    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", ppca.posterior(x))
        pyro.sample("aux", _aux())
    return guide


def obsless_plate(ppca):  # a plate of its own, which no observation shares
    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", ppca.posterior(x))
        with pyro.plate("aux_plate", 3):
            pyro.sample("aux", _aux())
    return guide


def nested_obsless_plate(ppca):
    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", ppca.posterior(x))
            with pyro.plate("inner", 3, dim=-2):
                pyro.sample("aux", _aux())
    return guide


def marked_inside(ppca):  # marked auxiliary, but nothing the model has depends on it
    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", ppca.posterior(x))
            pyro.sample("aux", dist.Normal(0.0, 0.01).expand([5]).to_event(1),
                        infer={"is_auxiliary": True})
    return guide


def marked_outside(ppca):
    def guide(x):
        pyro.sample("aux", _aux(), infer={"is_auxiliary": True})
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", ppca.posterior(x))
    return guide


def guide_factor(ppca):  # a term of the guide's density that the model lacks: 3 nats off
    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", ppca.posterior(x))
            pyro.factor("aux", torch.full((x.shape[0],), 3.0), has_rsample=True)
    return guide


LAYOUTS = [inside, outside_before, outside_after, obsless_plate, nested_obsless_plate,
           marked_inside, marked_outside, guide_factor]


def _quiet(fn):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pyro's "Found non-auxiliary vars in guide"
        return fn()


ENTRY_POINTS = {
    "log_likelihood": lambda m, g, x: log_likelihood(m, g, x, num_particles=50),
    "information": lambda m, g, x: information(m, g, x),
    "bayes_loop": lambda m, g, x: bayes_loop(m, g, torch.zeros(100, 4), num_permutations=20),
    "inference_gaps": lambda m, g, x: inference_gaps(m, g, x[:4], num_particles=5, steps=2),
    "ImportanceWeightedELBO": lambda m, g, x: IWAE(num_particles=4).loss(m, g, x),
    "differentiable_loss": lambda m, g, x: ImportanceWeightedELBO(
        num_particles=4).differentiable_loss(m, g, x),
    "gradient_snr": lambda m, g, x: gradient_snr(m, g, x, Trace_ELBO(), num_samples=4),
    "AggregatePosterior": lambda m, g, x: AggregatePosterior.from_guide(g, x, model=m),
    # before: fit with Pyro's ELBOs trained on the wrong bound (Pyro warns, or not at all for
    # a site marked is_auxiliary; TraceMeanField_ELBO failed with a bare AssertionError), and
    # evaluate_loss gave 4.70 where the pair without the site gives 6.10
    "fit": lambda m, g, x: fit(m, g, x, epochs=1, progress=False),
    "fit, TraceMeanField_ELBO": lambda m, g, x: fit(m, g, x, loss=TraceMeanField_ELBO(),
                                                    epochs=1, progress=False),
    "evaluate_loss": lambda m, g, x: evaluate_loss(m, g, x),
}
CALL_NAMES = {"differentiable_loss": "ImportanceWeightedELBO", "fit, TraceMeanField_ELBO": "fit"}


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_a_guide_site_the_model_lacks_is_refused_everywhere(ppca, layout, entry):
    x = ppca.sample(20)
    guide = layout(ppca)
    with pytest.raises(PairError) as info:
        _quiet(lambda: ENTRY_POINTS[entry](ppca.model, guide, x))
    message = str(info.value)
    assert message.startswith(CALL_NAMES.get(entry, entry) + ": guide site 'aux'")
    assert "not a latent site of the model" in message
    assert "Remove it from the guide" in message
    if layout in (marked_inside, marked_outside):
        assert "is_auxiliary" in message
    if layout is guide_factor:
        assert "observed in the guide (obs= or pyro.factor)" in message
    if layout in (outside_before, outside_after, obsless_plate, marked_outside):
        assert "outside pyro.plate('data')" in message
        assert "global latent" not in message   # not the remedy for a guide-only site


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda f: f.__name__)
def test_the_extra_site_is_classified_as_extra(ppca, layout):
    sites = pair_sites(ppca.model, layout(ppca), (ppca.sample(5),))
    assert sites.extra_guide_sites == ["aux"]
    assert sites.global_latents == [] and sites.local_latents == ["z"]
    assert not sites.checkable


def test_a_marked_auxiliary_site_without_a_model_leaves_no_trace_in_the_aggregate(ppca):
    """Without the model, AggregatePosterior still refuses an auxiliary site nothing uses."""
    with pytest.raises(PairError, match="AggregatePosterior: guide site 'aux' is marked "
                                        r"infer=\{'is_auxiliary': True\}"):
        AggregatePosterior.from_guide(marked_inside(ppca), ppca.sample(10))


def test_a_point_mass_beside_a_marked_auxiliary_site_is_still_a_point_mass(ppca):
    """The Delta at z does not depend on the auxiliary draw: log w would be log p(x, z_hat)
    minus log q(aux) (5.07 nats off before), not a bound."""
    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("aux", dist.Normal(0.0, 1.0).expand([2]).to_event(1),
                        infer={"is_auxiliary": True})
            pyro.sample("z", dist.Delta(ppca.posterior(x).mean, event_dim=1))

    x = ppca.sample(5)
    sites = pair_sites(ppca.model, guide, (x,))
    assert sites.delta_guide_sites == ["z"] and sites.extra_guide_sites == ["aux"]
    with pytest.raises(PairError, match="log_likelihood: guide site 'aux' is marked"):
        log_likelihood(ppca.model, guide, x, num_particles=10)


def _constrained_model(x):
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        s = pyro.sample("s", dist.LogNormal(0.0, 0.5))
        pyro.sample("x", dist.Normal(z.sum(-1), s), obs=x)


def test_autonormal_auxiliary_sites_are_transported_and_left_out_of_the_aggregate():
    """AutoNormal's z_unconstrained feeds the Delta at z: part of q, not an extra site; the
    aggregate posterior is over the model's latents only (it held z_unconstrained too)."""
    x = torch.randn(6)
    guide = AutoNormal(_constrained_model)
    sites = pair_sites(_constrained_model, guide, (x,))
    assert sites.extra_guide_sites == [] and sites.delta_guide_sites == []
    assert sorted(sites.auxiliary) == ["s_unconstrained", "z_unconstrained"]
    q = AggregatePosterior.from_guide(guide, x, model=_constrained_model)
    assert [b.name for b in q.blocks] == ["z", "s"]


def test_autonormal_log_weights_are_exact_with_a_constrained_site():
    """log w = log p(x, z, s) - log q(z) - log q(s) with q(s) the LogNormal that AutoNormal's
    Normal on log s makes (the Delta's log_density is the Jacobian)."""
    from pyro_lvm.infer.importance import importance_sample

    x = torch.randn(6)
    guide = AutoNormal(_constrained_model)
    sample = importance_sample(_constrained_model, guide, (x,), num_particles=3,
                               tempered=False)
    z, s = sample.values("z"), sample.values("s").squeeze(-1)
    loc_z, scale_z = pyro.param("AutoNormal.locs.z"), pyro.param("AutoNormal.scales.z")
    loc_s, scale_s = pyro.param("AutoNormal.locs.s"), pyro.param("AutoNormal.scales.s")
    normal = dist.Normal
    want = (normal(0.0, 1.0).log_prob(z).sum(-1) + dist.LogNormal(0.0, 0.5).log_prob(s)
            + normal(z.sum(-1), s).log_prob(x)
            - normal(loc_z, scale_z).log_prob(z).sum(-1) - dist.LogNormal(loc_s, scale_s)
            .log_prob(s))
    torch.testing.assert_close(sample.log_weights, want.detach(), rtol=1e-5, atol=1e-5)


# -- item 2: numbers that are not finite are flagged ------------------------------------------

def _infinite_scale_guide(x):
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(torch.zeros(2), math.inf).to_event(1))


def test_log_likelihood_of_an_infinite_guide_scale_is_flagged(ppca):
    x = ppca.sample(5)
    with pyro.validation_enabled(False):
        ev = _quiet(lambda: log_likelihood(ppca.model, _infinite_scale_guide, x,
                                           num_particles=100))
    assert ev.log_px.isnan().all()
    assert ev.khat.isnan().all()  # not -inf ("equal weights"): NaN weights have no k-hat
    assert ev.flagged.tolist() == [True] * 5
    assert ev.nonfinite.tolist() == [True] * 5
    summary = ev.summary()
    assert summary["flagged_fraction"] == 1.0
    assert summary["nonfinite_fraction"] == 1.0


@pytest.mark.parametrize("field,value", [("log_px", math.nan), ("log_px", -math.inf),
                                         ("ess", math.nan), ("ess", math.inf),
                                         ("khat", math.nan), ("khat", math.inf)])
def test_evidence_flags_every_number_that_is_not_finite(field, value):
    parts = {"log_px": torch.tensor([-3.0, -4.0]), "ess": torch.tensor([90.0, 80.0]),
             "khat": torch.tensor([0.1, 0.2], dtype=torch.double)}
    parts[field] = parts[field].clone()
    parts[field][1] = value
    ev = Evidence(parts["log_px"], parts["ess"], parts["khat"], 100)
    assert ev.flagged.tolist() == [False, True]
    assert ev.nonfinite.tolist() == [False, True]
    assert ev.summary()["nonfinite_fraction"] == 0.5


def test_equal_weights_are_not_flagged(ppca):
    """k-hat -inf (finite weights all equal: the exact posterior) is a reliable estimate."""
    ev = log_likelihood(ppca.model, ppca.exact_posterior, ppca.sample(3), num_particles=100)
    assert ev.khat.tolist() == [-math.inf] * 3
    assert ev.flagged.tolist() == [False] * 3
    assert ev.summary()["nonfinite_fraction"] == 0.0


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_pareto_khat_of_weights_that_are_not_numbers_is_nan(bad):
    lw = torch.randn(400, generator=torch.Generator().manual_seed(0))
    lw[7] = bad
    assert math.isnan(pareto_khat(lw))


def test_gradient_snr_with_a_gradient_that_is_not_finite_has_no_group_snr():
    snr = GradientSNR(mean={"w": torch.tensor([1.0, math.nan]), "v": torch.ones(1)},
                      std={"w": torch.ones(2), "v": torch.ones(1)},
                      snr={"w": torch.tensor([1.0, math.nan]), "v": torch.ones(1)},
                      group_of={"w": "model", "v": "guide"}, num_samples=100)
    assert snr.nonfinite == {"w": 1, "v": 0}
    assert math.isnan(snr.groups["model"])
    assert snr.groups["guide"] == pytest.approx(math.sqrt(97 / 99 - 0.01))


def _gaps(**bad):
    values = {"log_px": torch.tensor([-1.0, -1.0]), "elbo": torch.tensor([-1.5, -1.5]),
              "elbo_best": torch.tensor([-1.2, -1.2]), "ess": torch.tensor([9.0, 9.0]),
              "khat": torch.tensor([0.1, 0.1]), "rise": torch.zeros(2)}
    for name, value in bad.items():
        values[name] = values[name].clone()
        values[name][1] = value
    return InferenceGaps(**values, converged=torch.tensor([True, True]), num_particles=100,
                         steps=10)


@pytest.mark.parametrize("field,value", [("log_px", math.nan), ("elbo", -math.inf),
                                         ("elbo_best", math.nan), ("ess", math.nan),
                                         ("khat", math.nan)])
def test_inference_gaps_flag_numbers_that_are_not_finite(field, value):
    gaps = _gaps(**{field: value})
    assert gaps.nonfinite.tolist() == [False, True]
    assert gaps.flagged.tolist() == [False, True]
    summary = gaps.summary()
    assert "WARNING: 1 of 2 datapoints have numbers that are not finite" in summary
    if field != "khat" and field != "ess":
        assert "cannot be told: the gaps are not finite" in summary
        assert "gap dominates:" not in summary


def test_finite_inference_gaps_are_not_flagged():
    gaps = _gaps()
    assert gaps.flagged.tolist() == [False, False]
    assert "not finite" not in gaps.summary()


def test_energy_test_of_draws_that_are_not_finite_has_no_p_value():
    """Before: the distances were nan, no permutation reached them, and p = 1 / (1 + P), the
    smallest possible: a rejection for the wrong reason."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(50, 2, generator=g), torch.randn(60, 2, generator=g)
    assert energy_test(x, y).nonfinite == (0, 0)
    y[3, 1], x[7, 0] = math.nan, -math.inf
    result = energy_test(x, y)
    assert result.nonfinite == (1, 1)
    assert math.isnan(result.p_value) and math.isnan(result.statistic)


def _unit_scale_then(bad):
    """A guide whose coordinate 0 is N(0, 1) (the prior: calibrated) and coordinate 1 has
    scale ``bad`` (inf: every draw infinite)."""
    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(torch.zeros(2), torch.tensor([1.0, bad])).to_event(1))
    return guide


def test_bayes_loop_with_draws_that_are_not_finite_is_not_judged(ppca):
    """Before: the infinite draws got rank 0 or L, and the summary blamed the guide's family."""
    with pyro.validation_enabled(False):
        result = bayes_loop(ppca.model, _unit_scale_then(math.inf), torch.zeros(200, 4),
                            num_posterior_samples=19)
    assert result.nonfinite == {"posterior": 200 * 19, "simulated": 0, "prior": 0}
    assert result.flagged and not result.passed and math.isnan(result.p_value)
    assert math.isnan(result.chi2_p[1]) and math.isnan(result.ks_p[1])
    assert result.chi2_p[0] > 1e-3 and result.ks_p[0] > 1e-3  # coordinate 0 is still tested
    summary = result.summary()
    assert "NOT JUDGED" in summary and "3800 of the posterior draws' values" in summary
    assert "coordinates z[1]." in summary and "family cannot" not in summary
    rep = Report("t")
    metrics = bayes_loop_section(rep, {"bad": result})
    assert metrics["bad"]["nonfinite"]["posterior"] == 3800
    assert rep.warnings == ["bad: " + summary] and "not finite" in rep.render()
    assert result.worst() == "draws not finite in z[1]"


def test_a_finite_bayes_loop_is_not_flagged(ppca):
    result = bayes_loop(ppca.model, _unit_scale_then(1.0), torch.zeros(200, 4),
                        num_posterior_samples=19)
    assert result.nonfinite == {"posterior": 0, "simulated": 0, "prior": 0}
    assert not result.flagged and "NOT JUDGED" not in result.summary()
    assert math.isfinite(result.p_value)


def _nan_mean_guide(x):
    """z | x ~ N((x_0, x_1), 0.5^2 I), but row 0's coordinate 1 has a nan mean."""
    loc = x[:, :2].clone()
    loc[0, 1] = math.nan
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(loc, 0.5).to_event(1))


def test_information_flags_numbers_that_are_not_finite(ppca):
    """Before: nothing said so, and active_units counted the nan coordinate as inactive."""
    x = ppca.sample(40)
    with pyro.validation_enabled(False), pytest.warns(UserWarning, match="information: WARN"):
        info = information(ppca.model, _nan_mean_guide, x)
    assert info.flagged
    assert info.nonfinite["unit_activity"] == 1 and info.unit_activity[1].isnan()
    assert info.nonfinite["rate"] == 1  # row 0's draw; every log q(z) mixes row 0's component
    assert info.nonfinite["mutual_information"] == info.nonfinite["marginal_kl"] == 40
    assert info.active_units == 1
    assert math.isnan(info.rate.value) and math.isnan(info.marginal_kl.value)
    summary = info.summary()
    assert "WARNING: not finite (nan or inf): 1 rate terms" in summary
    assert "active units: 1 of 2 (1 not known: activity not finite)" in summary
    assert info.as_dict()["nonfinite"]["unit_activity"] == 1


def test_finite_information_is_not_flagged(ppca):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        info = information(ppca.model, ppca.exact_posterior, ppca.sample(40))
    assert not info.flagged and set(info.nonfinite.values()) == {0}
    assert "WARNING" not in info.summary()


def test_prior_gap_of_a_guide_with_nan_means_is_flagged(ppca):
    x = ppca.sample(40)
    with pyro.validation_enabled(False):
        gap = _quiet(lambda: prior_gap(ppca.model, _nan_mean_guide, x, num_permutations=20))
    assert gap.flagged and math.isnan(gap.kl.value)
    assert not prior_gap(ppca.model, ppca.exact_posterior, x, num_permutations=20).flagged


def _weights_model(x):
    w = pyro.param("w", torch.full((4, 2), 0.3))
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z @ w.T, 1.0).to_event(1), obs=x)


def test_an_autoguide_on_minibatches_is_refused_with_the_remedy(ppca):
    """Before: AutoNormal's locs were sized by the first batch (50 of 300 rows) and every batch
    of 50 other rows reused them by position, with no error or warning."""
    x = ppca.sample(300)
    with pytest.raises(PairError, match=r"fit: the guide is Pyro's AutoNormal, whose parameters "
                                        r"for the per-datapoint site 'z' .* a batch of 50 of "
                                        r"the 300 rows.*all 300 rows at once"):
        fit(_weights_model, AutoNormal(_weights_model), x, batch_size=50, epochs=1,
            progress=False)
    pyro.clear_param_store()
    guide = AutoNormal(_weights_model)
    fit(_weights_model, guide, x, batch_size=300, epochs=2, progress=False)  # full batch: fine
    assert pyro.param("AutoNormal.locs.z").shape == (300, 2)
    with pytest.raises(PairError, match=r"evaluate_loss: the guide is Pyro's AutoNormal.* a "
                                        r"batch of 256 of the 300 rows"):
        evaluate_loss(_weights_model, guide, x, batch_size=256)
    with pytest.raises(PairError, match=r"log_likelihood: the guide is Pyro's AutoNormal.*a "
                                        r"batch of 256 of the 300 rows.*chunk_size"):
        log_likelihood(_weights_model, guide, x, num_particles=10, chunk_size=256)
    assert log_likelihood(_weights_model, guide, x, num_particles=10,
                          chunk_size=300).log_px.shape == (300,)
