"""The converged head: L-BFGS logistic regression, checked against scikit-learn."""

import numpy as np
import pytest
import torch

from training.head import fit_head, fit_logistic

sklearn = pytest.importorskip("sklearn.linear_model")


def _blobs(n_per_class=40, classes=4, dim=16, seed=0):
    centres = np.random.default_rng(99).normal(0, 1.5, size=(classes, dim))
    rng = np.random.default_rng(seed)
    x = np.concatenate([c + rng.normal(0, 1.0, size=(n_per_class, dim)) for c in centres]).astype(np.float32)
    y = np.repeat(np.arange(classes), n_per_class)
    return x, y


def test_the_head_solves_the_same_problem_as_scikit_learns_logistic_regression():
    x, y = _blobs()
    C = 0.5
    # scikit-learn minimises 0.5||W||^2 + C * sum CE; ours mean CE + (lam/2)||W||^2: lam = 1 / (C n)
    lam = 1.0 / (C * len(y))
    w, b = fit_logistic(torch.from_numpy(x), torch.from_numpy(y), lam, num_classes=4, max_iter=500)
    ref = sklearn.LogisticRegression(C=C, tol=1e-10, max_iter=5000).fit(x, y)
    ours = torch.softmax(torch.from_numpy(x) @ w.T + b, 1).numpy()
    assert np.abs(ours - ref.predict_proba(x)).max() < 1e-3
    assert (ours.argmax(1) == ref.predict(x)).all()


def test_the_regularisation_is_chosen_on_validation_and_pulls_toward_the_prior():
    x, y = _blobs(seed=1)
    xv, yv = _blobs(n_per_class=20, seed=2)
    fit = fit_head(torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(xv), torch.from_numpy(yv), num_classes=4)
    best = min(fit.path, key=lambda p: p["val_loss"])
    assert fit.lam == best["lambda"] and fit.val_loss == pytest.approx(best["val_loss"])
    assert fit.val_acc > 0.8 and len(fit.path) >= 2
    # A strong pull toward a prior keeps the weights near it.
    prior = torch.randn(4, 16)
    w, _ = fit_logistic(torch.from_numpy(x), torch.from_numpy(y), 100.0, num_classes=4, prior=prior)
    assert torch.allclose(w, prior, atol=0.05)
