"""The gallery of real-world pairs (tests/gallery.py) through every objective and diagnostic:
for each pair and call, the number and its independent check, or the error's first words.

    .venv/bin/python benchmarks/gallery_table.py > docs/gallery.md

Columns: the vectorization verdict; IWAE(8) per datapoint, and the largest difference from the
pair's hand-written torch log weights on the same draws; DReG-IWAE(8) training gradients;
log_likelihood (S = 1000) per datapoint, the exact log p(x) where one is known, and the share
of points whose Pareto k-hat flags the estimate; information (rate and mutual information);
Bayes' loop p-value; AggregatePosterior. The guides are as built, not trained: only the exact
posteriors (bernoulli_guide, gmm_categorical_guide, gmm_enumerated's enumeration) are expected
to match log p(x) and pass Bayes' loop.
"""

import math
import sys
import warnings
from pathlib import Path

import pyro
import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from gallery import PAIRS  # noqa: E402
from test_gallery import reference_log_weights  # noqa: E402

from pyro_lvm.diagnostics import (  # noqa: E402
    AggregatePosterior,
    bayes_loop,
    information,
    log_likelihood,
)
from pyro_lvm.infer import IWAE, importance_sample  # noqa: E402
from pyro_lvm.infer.particles import pair_info  # noqa: E402


def cell(fn):
    try:
        return fn()
    except Exception as e:  # the table shows what a user would read
        text = str(e).split(": ", 1)[-1]
        return f"error: {text[:90]}…"


def main():
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    print("| pair | particles | IWAE(8) / point (max diff vs hand-written) | DReG grads | "
          "log p(x) (exact), flagged | rate, I | Bayes' loop p | q(z) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in sorted(PAIRS):
        print(f"| {name} | " + " | ".join(row(name)) + " |")


def row(name: str) -> list[str]:
    """The table's cells for one pair."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    pair = PAIRS[name]()
    for module in pair.eval_modules:
        module.eval()
    x, n = pair.data, pair.data.shape[0]

    def verdict():
        info = pair_info(pair.model, pair.guide, (x,), call="gallery")
        return "vectorized" if info.vectorized else f"one at a time ({info.reason[:60]}…)"

    def iwae():
        pyro.set_rng_seed(1)
        value = IWAE(8).loss(pair.model, pair.guide, x) / n
        if pair.log_weight is None:
            return f"{-value:.4f}"
        pyro.set_rng_seed(1)
        sample = importance_sample(pair.model, pair.guide, (x,), num_particles=8)
        diff = (sample.log_weights.detach() - reference_log_weights(pair, sample)).abs()
        return f"{-value:.4f} ({diff.max():.1e})"

    def dreg():
        IWAE(8, estimator="dreg").loss_and_grads(pair.model, pair.guide, x)
        grads = [p.grad for _, p in pyro.get_param_store().named_parameters()
                 if p.grad is not None]
        ok = grads and all(torch.isfinite(g).all() for g in grads)
        return f"{len(grads)} finite" if ok else "NON-FINITE"

    def evidence():
        ev = log_likelihood(pair.model, pair.guide, x, num_particles=1000)
        text = f"{ev.log_px.mean():.4f}"
        if pair.exact_log_px is not None:
            text += f" (exact {pair.exact_log_px(x).detach().double().mean():.4f})"
        return text + f", k-hat > 0.7: {100 * ev.flagged.double().mean():.0f}%"

    def info():
        i = information(pair.model, pair.guide, x)
        return f"{float(i.rate):.3f}, {float(i.mutual_information):.3f}"

    def loop():
        r = bayes_loop(pair.model, pair.guide, x, num_posterior_samples=49)
        return f"{r.p_value:.3g}" + ("" if r.passed else " FAILED")

    def aggregate():
        q = AggregatePosterior.from_guide(pair.guide, x)
        z = q.sample(100)
        return "ok" if math.isfinite(float(q.log_prob(z).mean())) else "NaN"

    return [cell(f) for f in (verdict, iwae, dreg, evidence, info, loop, aggregate)]


if __name__ == "__main__":
    main()
