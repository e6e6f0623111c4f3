"""Source of tutorials/04_tighter_bounds.ipynb (tighter bounds); see tutorials/build.py."""

CELLS = [
    ("md", """\
# 04 · Tighter bounds: IWAE, MIWAE, PIWAE, CIWAE and DReG

**Claims.**

1. (Burda et al. 2016, *Importance weighted autoencoders*) With K particles per datapoint,
   IWAE_K = E log (1/K) sum_k p(x, z_k) / q(z_k | x) is a lower bound on log p(x) that
   tightens as K grows: ELBO = IWAE_1 <= IWAE_K <= IWAE_2K <= log p(x). Training with it
   gives a better generative model (higher log p(x)).
2. (Rainforth et al. 2018, *Tighter variational bounds are not necessarily better*) A tighter
   bound is not a better objective for the *inference network*: the signal-to-noise ratio
   (SNR = |E g| / std g) of the IWAE gradient falls like 1/sqrt(K) for the encoder's
   parameters while it rises like sqrt(K) for the decoder's. Their remedies spend the same
   particles differently: MIWAE(M, K) averages M independent IWAE_K bounds; CIWAE(beta)
   mixes beta * ELBO + (1 - beta) * IWAE_K; PIWAE(M, K) trains the decoder with IWAE_MK and
   the encoder with MIWAE(M, K). (In pyro_lvm, as in every objective, K comes first and M
   by name: `MIWAE(K, num_outer=M)`, `PIWAE(K, num_outer=M)`.)
3. (Tucker et al. 2018, *Doubly reparameterized gradient estimators*) The encoder's IWAE
   gradient can be rewritten (DReG) so that its SNR no longer collapses with K — same
   objective, same expected gradient, less noise.

The data: scikit-learn's 1,797 8x8 digits, statically binarized (one fixed Bernoulli draw per
pixel), with a 64-128-8 Bernoulli VAE. These images are tiny, so expect small differences in
log p(x) between objectives; the notebook prints them with their standard errors and says
which ones the numbers support."""),
    ("setup", ""),
    ("md", """\
## Six objectives, one architecture, one particle budget

Every objective below (except the plain VAE) spends 16 particles per datapoint and step:
IWAE_16 with the plain reparameterization gradient, the same bound with DReG encoder
gradients, MIWAE(M = 4, K = 4), PIWAE(M = 4, K = 4) and CIWAE(beta = 0.5, K = 16). All
start from the same initial weights and see the same minibatches (100 epochs of 12
minibatches of 128, Adam with learning rate 3e-3). The VAE maximizes the ordinary ELBO
(`Trace_ELBO`, one particle)."""),
    ("code", """\
import math
import time

import matplotlib.pyplot as plt

from pyro_lvm.datasets import digits
from pyro_lvm.diagnostics import log_likelihood
from pyro_lvm.infer import CIWAE, IWAE, MIWAE, PIWAE, evaluate_loss, fit
from pyro_lvm.models import VAE

ds = digits(binarize="static", seed=0)
train, test = ds.train, ds.test
EPOCHS = 3 if FAST else 100
print(f"{ds.name}: {len(train)} train / {len(test)} test images; {EPOCHS} epochs each")

objectives = {
    "VAE (ELBO)": pyro.infer.Trace_ELBO(),
    "IWAE(16)": IWAE(16),
    "DReG IWAE(16)": IWAE(16, estimator="dreg"),
    "MIWAE(4,4)": MIWAE(4, num_outer=4),
    "PIWAE(4,4)": PIWAE(4, num_outer=4),
    "CIWAE(0.5,16)": CIWAE(16, beta=0.5),
}


def new_vae():
    torch.manual_seed(0)  # the same initial weights for every objective
    return VAE(64, 8, hidden=(128,), likelihood="bernoulli")


vaes, histories = {}, {}
for name, objective in objectives.items():
    pyro.clear_param_store()
    vaes[name] = vae = new_vae()
    t = time.perf_counter()
    histories[name] = fit(vae.model, vae.guide, train, loss=objective, epochs=EPOCHS,
                          optimizer=pyro.optim.Adam({"lr": 3e-3}), batch_size=128, seed=0,
                          progress=False)
    print(f"{name:14s} trained in {time.perf_counter() - t:5.1f} s, "
          f"final train loss {histories[name].train_loss[-1]:.3f}")"""),
    ("md", """\
## Bounds and importance-sampled log-likelihood on the test set

For each trained model, on the 179 test images:

- the **train bound**: the objective it was trained with, evaluated on the training set at
  the end (PIWAE reports its model objective, IWAE_16);
- the **test ELBO** (K = 1) and the **test IWAE_16 bound**, each averaged over many draws
  (MIWAE(M, K) with large M is just an average of M independent IWAE_K estimates);
- the **test log p(x)**, importance-sampled with the model's own encoder as proposal and S
  particles (itself IWAE_S, so still a lower bound in expectation), with the median effective
  sample size of those S weights as a share of S — a measure of the encoder as a proposal.

The importance-sampled estimate is itself a bound (a tight one here: the curves further
down level off long before S), and the test set is small: compare the differences between
models with their paired standard errors (the same images for every model)."""),
    ("code", """\
S = 200 if FAST else 5000
results = {}
for name, vae in vaes.items():
    own = objectives[name]
    if isinstance(own, pyro.infer.Trace_ELBO):
        own = MIWAE(1, num_outer=16)  # the same ELBO, averaged over 16 draws
    evidence = log_likelihood(vae.model, vae.guide, test, num_particles=S)
    results[name] = {
        "train bound": -evaluate_loss(vae.model, vae.guide, train, loss=own),
        "test ELBO": -evaluate_loss(vae.model, vae.guide, test, loss=MIWAE(1, num_outer=256)),
        "test IWAE16": -evaluate_loss(vae.model, vae.guide, test, loss=MIWAE(16, num_outer=16)),
        "test log p(x)": evidence.log_px.mean().item(),
        "ESS/S": evidence.ess.median().item() / S,
        "log_px": evidence.log_px,
    }

base = results["VAE (ELBO)"]["log_px"]
print(f"{'objective':14s} {'train bound':>11s} {'test ELBO':>10s} {'test IWAE16':>11s} "
      f"{'test log p(x)':>13s} {'vs VAE (+-se)':>15s} {'ESS/S':>6s}  ELBO<=IWAE<=log p")
for name, r in results.items():
    diff = r["log_px"] - base
    se = diff.std().item() / math.sqrt(len(diff))
    ordered = r["test ELBO"] <= r["test IWAE16"] <= r["test log p(x)"]
    print(f"{name:14s} {r['train bound']:11.3f} {r['test ELBO']:10.3f} {r['test IWAE16']:11.3f} "
          f"{r['test log p(x)']:13.3f} {diff.mean().item():+8.3f} +-{se:.3f} {r['ESS/S']:6.3f}"
          f"  {ordered}")
print(f"(log p(x) with S = {S} importance samples per test image)")"""),
    ("md", """\
**The ordering checks.** ELBO <= IWAE_16 <= log p(x) holds for every model (the last
column), as it must: each is IWAE_K with K = 1, 16 and S, estimated on the same images.

**IWAE against the VAE** (Burda et al.): every objective with 16 particles gains about a
quarter of a nat of test log p(x) over the VAE, several paired standard errors away from
zero, so on this data the tighter bound does give a better generative model — but a small
improvement: a fraction of a nat on 64 binary pixels, not the several nats reported on
MNIST. This library's benchmark (`benchmarks/vae_vs_iwae.py`, 200 epochs, 5000 importance
samples) measured the same size of effect: VAE -22.95 against IWAE(K=50) -22.79 nats.
The gap between the train bounds and the test bounds (half a nat to a nat: 1,438 training
images overfit) is larger than any difference between objectives.

**The encoders differ much more than the decoders.** The IWAE-trained encoder has the
lowest test ELBO of all, well below the VAE's, and the smallest effective sample size: IWAE
does not ask q(z|x) to match the posterior, and (next section) its encoder gradient carries
little signal. DReG, MIWAE, PIWAE and CIWAE all give better encoders than IWAE_16 by both
measures; CIWAE's test ELBO matches the VAE's.

**Rainforth et al.'s stronger claim** — that MIWAE, PIWAE and CIWAE reach a *higher*
IWAE bound than IWAE itself — is only weakly visible here: their test IWAE16 bounds lie
above IWAE(16)'s, but by less than a tenth of a nat, and their log p(x) are the same as
IWAE's within the standard errors. One training seed is shown; differences that small are
also within what another seed can change. This data cannot separate the five tighter
objectives as generative models.

Next, the bound against K for every trained model: IWAE_K on the test set for K from 1 to
1024, averaged over M = 256 / K independent groups for K <= 256."""),
    ("code", """\
ks = [1, 4, 16, 64] if FAST else [1, 4, 16, 64, 256, 1024]
# IWAE_K averaged over M = 256 / K groups (at least one), so each point costs >= 256 draws
curves = {name: [-evaluate_loss(vae.model, vae.guide, test,
                                loss=MIWAE(k, num_outer=max(1, 256 // k)))
                 for k in ks]
          for name, vae in vaes.items()}

fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.8))
for (name, curve), color in zip(curves.items(), plt.cm.tab10.colors, strict=False):
    ax.plot(ks + [S], curve + [results[name]["test log p(x)"]], marker="o", ms=3,
            color=color, label=name)
    ax.plot([S], [results[name]["test log p(x)"]], marker="*", ms=10, color=color)
ax.set_xscale("log")
ax.set_xlabel("particles K")
ax.set_ylabel("test IWAE_K (nats per image)")
ax.set_title(f"bound against K (star: log p(x), S = {S})")
ax.grid(alpha=0.3, which="both")
ax.legend(fontsize=8)

names = list(results)[1:]  # the gain of each over the VAE
diffs = [(results[n]["log_px"] - base) for n in names]
bx.bar(range(len(names)), [d.mean().item() for d in diffs],
       yerr=[d.std().item() / math.sqrt(len(d)) for d in diffs], capsize=4,
       color=plt.cm.tab10.colors[1: len(names) + 1])
bx.axhline(0, color="k", lw=0.8)
bx.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
bx.set_ylabel("test log p(x) minus VAE's (nats)")
bx.set_title("log-likelihood gain over the VAE (+- paired s.e.)")
fig.tight_layout()
plt.show()"""),
    ("md", """\
Every curve rises with K and levels off at the model's log p(x) (the star): the tightening
of Burda et al. The height of a curve at K = 1 (the ELBO) is how good the encoder is as a
variational posterior; where it levels off is how good the decoder is as a generative
model. The two rank the objectives differently: the VAE and CIWAE are best at K = 1 and the
VAE is worst from K = 16 on; IWAE(16) is worst at K = 1 and among the best at the top.

## Gradient signal-to-noise ratio against K

Rainforth et al. define the SNR per gradient element as |E g| / std g over repeated
gradient estimates at fixed parameters, and study it per datapoint. We use their protocol
at a partially trained VAE (20 epochs of ELBO training, when the gradients still carry
signal): one training image replicated 64 times in the batch, so every gradient estimate
averages 64 independent copies (this multiplies every SNR by 8 and leaves the slopes
unchanged); the SNR is the root-mean-square over the elements of the decoder's (model) and
the encoder's (guide) parameters, from 100 independent gradient estimates, bias-corrected
for their finite number. Below about 0.1 the SNR cannot be told from zero with 100
estimates: `snr_versus_particles` then reports 0 and the fitted slope as nan."""),
    ("code", """\
from pyro_lvm.diagnostics import snr_versus_particles
from pyro_lvm.diagnostics.plots import plot_snr_versus_particles

pyro.clear_param_store()
partial = new_vae()
fit(partial.model, partial.guide, train, epochs=2 if FAST else 20, batch_size=128,
    optimizer=pyro.optim.Adam({"lr": 3e-3}), seed=0, progress=False)

particles = [1, 4, 16] if FAST else [1, 4, 16, 64]
num_samples = 10 if FAST else 100
point = train[:1].expand(64, -1)
snr = {name: snr_versus_particles(partial.model, partial.guide, point,
                                  lambda k, e=estimator: IWAE(k, estimator=e), particles,
                                  num_samples=num_samples)
       for name, estimator in (("IWAE", "reparam"), ("DReG", "dreg"))}
for name, r in snr.items():
    print(f"{name:5s} model SNR {[round(v, 3) for v in r['snr']['model']]} "
          f"slope {r['slope']['model']:.2f}; guide SNR {[round(v, 3) for v in r['snr']['guide']]} "
          f"slope {r['slope']['guide']:.2f}")
plot_snr_versus_particles(snr, title="IWAE_K: plain reparameterization vs DReG gradients")"""),
    ("md", """\
The decoder's (model's) SNR grows with K like the sqrt(K) of Rainforth et al.'s theorem
(fitted slope close to 0.5); the two estimators give the decoder the same gradient, so their
lines coincide. The encoder's (guide's) SNR under the plain IWAE gradient falls as K grows,
with a fitted slope somewhat shallower than the theorem's asymptotic -0.5 over K = 1..64.
DReG's encoder SNR does not fall: it stays roughly flat (its K = 1 value is the
sticking-the-landing ELBO gradient, already several times the reparameterization
gradient's), so the gap to plain IWAE widens with K — the point of Tucker et al.

## Spending a fixed budget: MIWAE and PIWAE

Rainforth et al.'s theorem says more generally that the decoder's SNR grows like sqrt(M K)
and the encoder's like sqrt(M / K). With M K = 64 particles per datapoint fixed, MIWAE(M, K)
slides from the ELBO averaged over 64 draws (K = 1) to IWAE_64 (M = 1), so the encoder's SNR
should fall like 1/K while the decoder's stays about the same. PIWAE gives the decoder
IWAE_64 whatever the split and its encoder MIWAE(M, K); MIWAE with DReG encoder gradients is
shown too. Lines that coincide are the same gradient: the decoders of MIWAE with and without
DReG, and the encoders of MIWAE and PIWAE."""),
    ("code", """\
budget = particles[-1]
fixed = {
    "MIWAE(M,K)": lambda k: MIWAE(k, num_outer=budget // k),
    "PIWAE(M,K)": lambda k: PIWAE(k, num_outer=budget // k),
    "DReG MIWAE(M,K)": lambda k: MIWAE(k, num_outer=budget // k, estimator="dreg"),
}
snr_fixed = {name: snr_versus_particles(partial.model, partial.guide, point, make, particles,
                                        num_samples=num_samples)
             for name, make in fixed.items()}
for name, r in snr_fixed.items():
    print(f"{name:16s} model SNR {[round(v, 3) for v in r['snr']['model']]}; "
          f"guide SNR {[round(v, 3) for v in r['snr']['guide']]}")
plot_snr_versus_particles(snr_fixed,
                          title=f"fixed budget: M groups of K particles, M K = {budget}")"""),
    ("md", """\
The encoder's SNR under MIWAE falls close to 1/K (fitted slope near -1), as the theorem
predicts; with DReG it falls more slowly. The decoder's SNR changes little with the split —
it is even somewhat *higher* when the budget is spent on many ELBO draws than on one
IWAE_64 — so on this model the fixed-budget trade-off is lopsided: splitting the particles
into groups buys the encoder a large gain in signal for a small loss to the decoder. PIWAE's
decoder SNR is flat (the small wiggles are estimation noise; each K uses fresh draws).

## What the numbers support

- **Supported:** the bounds are ordered as the theory requires (ELBO <= IWAE_K <= log p(x)
  for every model, and IWAE_K increasing in K); the SNR trends of Rainforth et al. (decoder
  up like sqrt(K), encoder down) and of Tucker et al. (DReG's encoder SNR does not collapse)
  are reproduced on this small model; and the objectives that give the encoder more signal
  (DReG, MIWAE, PIWAE, CIWAE) end with better encoders than IWAE (higher test ELBO and ESS).
- **Supported, but small:** training with a 16-particle bound improves test log p(x) over
  the VAE by about a quarter of a nat on 8x8 binary digits.
- **Not shown by this data:** that MIWAE, PIWAE or CIWAE give a better *generative model*
  than IWAE — their log p(x) differences are within the noise. The claim that tighter
  bounds give much better generative models is one about larger images (MNIST, Omniglot)."""),
]
