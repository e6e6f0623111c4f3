"""Gradient signal-to-noise: the estimator itself, and Rainforth et al.'s (2018) toy result."""

import dataclasses
import math

import numpy as np
import pyro
import pytest
import torch

from pyro_lvm.diagnostics import GradientSNR, SNRCallback, gradient_snr, loglog_slope
from pyro_lvm.infer import IWAE, fit
from pyro_lvm.models import PPCA, GaussianToy


@pytest.fixture
def toy():
    toy = GaussianToy(dim=20)
    x = toy.simulate(1024, seed=0)
    toy.set_near_optimum(x, noise=0.01, seed=100)
    return toy, x


def test_moments_match_a_hand_written_loop(toy):
    toy, x = toy
    loss = IWAE(5)
    result = gradient_snr(toy.model, toy.guide, x[:8], loss, num_samples=30, seed=4)
    grads = []
    with torch.random.fork_rng():
        torch.manual_seed(4)
        for _ in range(30):
            loss.loss_and_grads(toy.model, toy.guide, x[:8])
            grads.append(toy.mu.grad.clone())
            for p in toy.parameters():
                p.grad = None
    grads = torch.stack(grads).double()
    name = "gaussian_toy.model$$$0"
    assert result.group_of[name] == "model" and result.group_of["gaussian_toy.guide$$$0"] == "guide"
    torch.testing.assert_close(result.mean[name], grads.mean(0))
    torch.testing.assert_close(result.std[name], grads.std(0))
    torch.testing.assert_close(result.snr[name], grads.mean(0).abs() / grads.std(0))
    assert all(p.grad is None for p in toy.parameters())  # nothing left behind


def test_groups_are_computed_from_the_fields_not_given():
    """``groups`` used to be an init field that __post_init__ overwrote in place: a value
    given for it was silently dropped, and dataclasses.replace, which passes it on, rewrote
    the groups of the result it copied from."""
    fields = dict(mean={"w": torch.ones(2)}, std={"w": torch.ones(2)},
                  snr={"w": torch.tensor([2.0, 1.0])}, group_of={"w": "model"}, num_samples=100)
    result = GradientSNR(**fields)
    model = math.sqrt((2.0**2 + 1.0**2) / 2 * 97 / 99 - 1 / 100)
    assert result.groups["model"] == pytest.approx(model)
    assert math.isnan(result.groups["guide"])
    halved = dataclasses.replace(result, snr={"w": torch.tensor([1.0, 0.5])})
    assert result.groups["model"] == pytest.approx(model)  # the original is left alone
    assert halved.groups["model"] == pytest.approx(math.sqrt(1.25 / 2 * 97 / 99 - 1 / 100))
    with pytest.raises(TypeError, match="groups"):
        GradientSNR(**fields, groups={"model": 1.0})


def test_zero_signal_reads_as_zero_not_as_the_noise_floor():
    """At PPCA's exact posterior the guide's IWAE gradient has mean 0 and a positive spread:
    the true SNR is 0. The plain |mean|/std sits at the noise floor ~0.8/sqrt(n); the group
    value, with the bias of the squared mean removed, must be far below it."""
    torch.manual_seed(0)
    truth = PPCA(5, 2)
    x = truth.sample(200)
    ppca = PPCA(5, 2).fit_closed_form(x)
    result = gradient_snr(ppca.model, ppca.guide, x, IWAE(4), num_samples=100)
    plain = torch.cat([v.flatten() for k, v in result.snr.items()
                       if result.group_of[k] == "guide"])
    plain = plain[torch.isfinite(plain)].mean().item()  # (upper-triangle entries: no gradient)
    assert 0.04 < plain < 0.15
    assert result.groups["guide"] < 0.3 * plain


def snr_slopes(toy, x, estimator, particles=(1, 10, 100), datapoints=3, replicas=64,
               num_samples=100):
    """Log-log slope of SNR against K, per datapoint as in the paper: each datapoint is
    replicated ``replicas`` times in the batch, which multiplies the SNR by sqrt(replicas)
    (independent particles per copy) and leaves the slope unchanged."""
    snr = {"model": np.zeros(len(particles)), "guide": np.zeros(len(particles))}
    for i in range(datapoints):
        for j, k in enumerate(particles):
            r = gradient_snr(toy.model, toy.guide, x[i].expand(replicas, -1),
                             IWAE(k, estimator=estimator), num_samples, seed=1000 * i + k)
            for group in snr:
                snr[group][j] += r.groups[group] / datapoints
    return {group: loglog_slope(particles, v) for group, v in snr.items()}


def test_rainforth_toy_snr_slopes(toy):
    """Rainforth et al. 2018, section 4: under IWAE the guide's SNR falls like K^-1/2 and the
    model's rises like K^1/2; DReG's guide SNR does not fall.

    Tolerances come from 8 repeated runs of this configuration with other seeds (data,
    perturbation and draws): model slope 0.467 +- 0.007 (0.459 to 0.479), IWAE guide slope
    -0.473 +- 0.045 (-0.579 to -0.422), DReG guide slope 0.254 +- 0.008 (0.241 to 0.267).
    """
    toy, x = toy
    iwae = snr_slopes(toy, x, "reparam")
    dreg = snr_slopes(toy, x, "dreg")
    assert 0.40 < iwae["model"] < 0.55
    assert -0.65 < iwae["guide"] < -0.30
    assert dreg["guide"] > 0.1
    assert dreg["model"] == pytest.approx(iwae["model"])  # DReG leaves the model alone


def test_snr_callback_records_without_disturbing_training():
    toy = GaussianToy(dim=4)
    x = toy.simulate(64)

    def run(callbacks):
        pyro.clear_param_store()
        toy.set_near_optimum(x, noise=0.1)
        return fit(toy.model, toy.guide, x, loss=IWAE(4), epochs=4, batch_size=16,
                   callbacks=callbacks, progress=False)

    plain = run([])
    cb = SNRCallback(toy.model, toy.guide, x[:16], IWAE(4), every=2, num_samples=6)
    with_cb = run([cb])
    assert with_cb.train_loss == plain.train_loss
    assert cb.epochs == [2, 4] and len(cb.snr["guide"]) == 2
    assert all(v >= 0 for v in cb.snr["model"] + cb.snr["guide"])


def test_bad_arguments(toy):
    toy, x = toy
    with pytest.raises(ValueError, match="num_samples must be at least 4"):
        gradient_snr(toy.model, toy.guide, x, IWAE(2), num_samples=1)
    with pytest.raises(ValueError, match="every must be a positive integer"):
        SNRCallback(toy.model, toy.guide, x, IWAE(2), every=0)
