"""Tests for training.optim: the lecture's optimizers against torch.optim and float64 references."""

from __future__ import annotations

import inspect
import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from training.errors import ConfigError
from training.optim import (
    OPTIMIZERS,
    SGD,
    AdaGrad,
    Adam,
    Momentum,
    RMSProp,
    build_optimizer,
    optimizer_names,
)

STEPS = 8
ALL_NAMES = ["sgd", "momentum", "adagrad", "rmsprop", "adam", "adamw"]
LECTURE_NAMES = ["sgd", "momentum", "adagrad", "rmsprop", "adam"]


# --------------------------------------------------------------------------------------------
# Problems
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Quadratic:
    """f(θ) = ½ θᵀAθ − bᵀθ with A symmetric positive definite, so ∇f(θ) = Aθ − b."""

    A: np.ndarray
    b: np.ndarray
    theta0: np.ndarray

    def grad(self, theta: np.ndarray) -> np.ndarray:
        return self.A @ theta - self.b

    def loss(self, theta: torch.Tensor) -> torch.Tensor:
        A = torch.from_numpy(self.A).to(theta.dtype)
        b = torch.from_numpy(self.b).to(theta.dtype)
        return 0.5 * theta @ (A @ theta) - b @ theta


@pytest.fixture
def quadratic() -> Quadratic:
    rng = np.random.default_rng(0)
    m = rng.standard_normal((6, 6))
    return Quadratic(
        A=m.T @ m / 6 + 0.1 * np.eye(6),
        b=rng.standard_normal(6),
        theta0=rng.standard_normal(6),
    )


@dataclass(frozen=True)
class LeastSquares:
    """A tiny linear model y ≈ Wx + c fitted by mean squared error (a convex loss)."""

    x: torch.Tensor
    y: torch.Tensor

    def model(self) -> torch.nn.Linear:
        torch.manual_seed(1)
        return torch.nn.Linear(self.x.shape[1], self.y.shape[1])

    def loss(self, model: torch.nn.Module) -> torch.Tensor:
        return torch.nn.functional.mse_loss(model(self.x), self.y)


@pytest.fixture
def least_squares() -> LeastSquares:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(32, 4, generator=generator)
    true_w = torch.randn(4, 3, generator=generator)
    y = x @ true_w + 0.1 * torch.randn(32, 3, generator=generator)
    return LeastSquares(x=x, y=y)


def run_on_quadratic(
    make_optimizer: Callable[[list[torch.Tensor]], torch.optim.Optimizer],
    quadratic: Quadratic,
    *,
    steps: int = STEPS,
    extra_loss: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> np.ndarray:
    theta = torch.tensor(quadratic.theta0, dtype=torch.float64, requires_grad=True)
    optimizer = make_optimizer([theta])
    for _ in range(steps):
        optimizer.zero_grad()
        loss = quadratic.loss(theta)
        if extra_loss is not None:
            loss = loss + extra_loss(theta)
        loss.backward()
        optimizer.step()
    return theta.detach().numpy()


def train(model: torch.nn.Module, optimizer: torch.optim.Optimizer, problem: LeastSquares, steps: int) -> float:
    for _ in range(steps):
        optimizer.zero_grad()
        problem.loss(model).backward()
        optimizer.step()
    with torch.no_grad():
        return problem.loss(model).item()


# --------------------------------------------------------------------------------------------
# Float64 references: the book's formulas, one plain NumPy loop each
# --------------------------------------------------------------------------------------------


def reference_sgd(theta, grad_fn, steps, *, lr, weight_decay=0.0):
    for _ in range(steps):
        g = grad_fn(theta) + weight_decay * theta
        theta = theta - lr * g
    return theta


def reference_momentum(theta, grad_fn, steps, *, lr, alpha, weight_decay=0.0):
    v = np.zeros_like(theta)
    for _ in range(steps):
        g = grad_fn(theta) + weight_decay * theta
        v = alpha * v - lr * g
        theta = theta + v
    return theta


def reference_adagrad(theta, grad_fn, steps, *, lr, delta, weight_decay=0.0):
    r = np.zeros_like(theta)
    for _ in range(steps):
        g = grad_fn(theta) + weight_decay * theta
        r = r + g * g
        theta = theta - lr / (delta + np.sqrt(r)) * g
    return theta


def reference_rmsprop(theta, grad_fn, steps, *, lr, rho, delta, weight_decay=0.0):
    r = np.zeros_like(theta)
    for _ in range(steps):
        g = grad_fn(theta) + weight_decay * theta
        r = rho * r + (1 - rho) * g * g
        theta = theta - lr / np.sqrt(delta + r) * g
    return theta


def reference_adam(theta, grad_fn, steps, *, lr, rho1, rho2, delta, weight_decay=0.0):
    s = np.zeros_like(theta)
    r = np.zeros_like(theta)
    for t in range(1, steps + 1):
        g = grad_fn(theta) + weight_decay * theta
        s = rho1 * s + (1 - rho1) * g
        r = rho2 * r + (1 - rho2) * g * g
        s_hat = s / (1 - rho1**t)
        r_hat = r / (1 - rho2**t)
        theta = theta - lr * s_hat / np.sqrt(delta + r_hat)
    return theta


REFERENCES = {
    "sgd": reference_sgd,
    "momentum": reference_momentum,
    "adagrad": reference_adagrad,
    "rmsprop": reference_rmsprop,
    "adam": reference_adam,
}

# Learning rates big enough that the trajectories move visibly in STEPS steps.
TEST_LRS = {"sgd": 0.1, "momentum": 0.05, "adagrad": 0.3, "rmsprop": 0.05, "adam": 0.05, "adamw": 0.05}


def assert_same(actual: np.ndarray, expected: np.ndarray) -> None:
    np.testing.assert_allclose(actual, expected, rtol=1e-9, atol=1e-12)


# --------------------------------------------------------------------------------------------
# Agreement with torch.optim where the formulas coincide
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_sgd_matches_torch_sgd(quadratic, weight_decay):
    ours = run_on_quadratic(lambda p: SGD(p, lr=0.1, weight_decay=weight_decay), quadratic)
    theirs = run_on_quadratic(lambda p: torch.optim.SGD(p, lr=0.1, weight_decay=weight_decay), quadratic)
    assert not np.allclose(ours, quadratic.theta0)
    assert_same(ours, theirs)


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_momentum_matches_torch_sgd_with_negated_velocity_convention(quadratic, weight_decay):
    # Ours: v ← αv − εg, θ ← θ + v.  torch: b ← αb + g, θ ← θ − εb.  Same θ with v = −εb.
    ours = run_on_quadratic(lambda p: Momentum(p, lr=0.05, alpha=0.9, weight_decay=weight_decay), quadratic)
    theirs = run_on_quadratic(lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=weight_decay), quadratic)
    assert_same(ours, theirs)


def test_momentum_velocity_is_minus_lr_times_torch_momentum_buffer(quadratic):
    theta_ours = torch.tensor(quadratic.theta0, requires_grad=True)
    theta_torch = torch.tensor(quadratic.theta0, requires_grad=True)
    ours = Momentum([theta_ours], lr=0.05, alpha=0.9)
    theirs = torch.optim.SGD([theta_torch], lr=0.05, momentum=0.9)
    for theta, optimizer in [(theta_ours, ours), (theta_torch, theirs)]:
        for _ in range(3):
            optimizer.zero_grad()
            quadratic.loss(theta).backward()
            optimizer.step()
    velocity = ours.state[theta_ours]["v"]
    torch.testing.assert_close(velocity, -0.05 * theirs.state[theta_torch]["momentum_buffer"])


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_adagrad_matches_torch_adagrad_with_zero_initial_accumulator(quadratic, weight_decay):
    # Both add δ outside the square root: θ ← θ − ε g/(δ + √r).
    ours = run_on_quadratic(lambda p: AdaGrad(p, lr=0.3, delta=1e-7, weight_decay=weight_decay), quadratic)
    theirs = run_on_quadratic(
        lambda p: torch.optim.Adagrad(
            p, lr=0.3, eps=1e-7, initial_accumulator_value=0.0, lr_decay=0.0, weight_decay=weight_decay
        ),
        quadratic,
    )
    assert_same(ours, theirs)


def test_rmsprop_matches_float64_reference_with_delta_inside_the_square_root(quadratic):
    ours = run_on_quadratic(lambda p: RMSProp(p, lr=0.05, rho=0.9, delta=1e-6), quadratic)
    expected = reference_rmsprop(quadratic.theta0, quadratic.grad, STEPS, lr=0.05, rho=0.9, delta=1e-6)
    assert_same(ours, expected)


def test_rmsprop_differs_from_torch_rmsprop_which_adds_eps_outside_the_square_root(quadratic):
    # With a large δ the placement matters: √(δ + r) here, √r + eps in torch.
    ours = run_on_quadratic(lambda p: RMSProp(p, lr=0.05, rho=0.9, delta=0.5), quadratic)
    theirs = run_on_quadratic(lambda p: torch.optim.RMSprop(p, lr=0.05, alpha=0.9, eps=0.5), quadratic)
    expected = reference_rmsprop(quadratic.theta0, quadratic.grad, STEPS, lr=0.05, rho=0.9, delta=0.5)
    assert_same(ours, expected)
    assert not np.allclose(ours, theirs, rtol=1e-3, atol=0)


def test_adam_matches_float64_reference_with_delta_inside_the_square_root(quadratic):
    ours = run_on_quadratic(lambda p: Adam(p, lr=0.05), quadratic)
    expected = reference_adam(quadratic.theta0, quadratic.grad, STEPS, lr=0.05, rho1=0.9, rho2=0.999, delta=1e-8)
    assert_same(ours, expected)


def test_adam_without_delta_equals_torch_adam_without_eps(quadratic):
    ours = run_on_quadratic(lambda p: Adam(p, lr=0.05, rho1=0.8, rho2=0.99, delta=0.0), quadratic)
    theirs = run_on_quadratic(lambda p: torch.optim.Adam(p, lr=0.05, betas=(0.8, 0.99), eps=0.0), quadratic)
    assert_same(ours, theirs)


def test_adamw_entry_builds_torch_adamw_with_decoupled_weight_decay(quadratic):
    ours = run_on_quadratic(lambda p: build_optimizer("adamw", p, lr=0.05, weight_decay=0.1), quadratic)
    theirs = run_on_quadratic(lambda p: torch.optim.AdamW(p, lr=0.05, weight_decay=0.1), quadratic)
    assert_same(ours, theirs)
    optimizer = build_optimizer("adamw", [torch.zeros(2, requires_grad=True)], weight_decay=0.01)
    assert type(optimizer) is torch.optim.AdamW
    assert optimizer.param_groups[0]["weight_decay"] == 0.01


# --------------------------------------------------------------------------------------------
# Weight decay, parameter groups, state, skipped parameters, closure
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", LECTURE_NAMES)
def test_each_lecture_optimizer_matches_its_float64_reference_with_weight_decay(quadratic, name):
    spec = OPTIMIZERS[name]
    lr = TEST_LRS[name]
    ours = run_on_quadratic(lambda p: build_optimizer(name, p, lr=lr, weight_decay=0.2), quadratic)
    expected = REFERENCES[name](quadratic.theta0, quadratic.grad, STEPS, lr=lr, weight_decay=0.2, **spec.defaults)
    assert_same(ours, expected)


@pytest.mark.parametrize("name", LECTURE_NAMES)
def test_weight_decay_equals_adding_half_lambda_squared_norm_to_the_loss(quadratic, name):
    lr, lam = TEST_LRS[name], 0.2
    with_decay = run_on_quadratic(lambda p: build_optimizer(name, p, lr=lr, weight_decay=lam), quadratic)
    with_penalty = run_on_quadratic(
        lambda p: build_optimizer(name, p, lr=lr),
        quadratic,
        extra_loss=lambda theta: 0.5 * lam * (theta * theta).sum(),
    )
    assert_same(with_decay, with_penalty)


@pytest.mark.parametrize("name", LECTURE_NAMES)
def test_weight_decay_leaves_param_grad_untouched(name):
    param = torch.ones(3, requires_grad=True)
    param.grad = torch.full((3,), 0.5)
    build_optimizer(name, [param], lr=0.1, weight_decay=0.3).step()
    torch.testing.assert_close(param.grad, torch.full((3,), 0.5))


@pytest.mark.parametrize("name", ALL_NAMES)
def test_param_groups_use_their_own_learning_rates(name, least_squares):
    def make_params():
        model = least_squares.model()
        return model, model.weight, model.bias

    model, weight, bias = make_params()
    grouped = build_optimizer(name, [{"params": [weight], "lr": 0.05}, {"params": [bias]}], lr=0.01)
    assert [group["lr"] for group in grouped.param_groups] == [0.05, 0.01]
    train(model, grouped, least_squares, steps=5)

    # The same as two optimizers, one per group.
    separate_model, separate_weight, separate_bias = make_params()
    weight_optimizer = build_optimizer(name, [separate_weight], lr=0.05)
    bias_optimizer = build_optimizer(name, [separate_bias], lr=0.01)
    for _ in range(5):
        separate_model.zero_grad()
        least_squares.loss(separate_model).backward()
        weight_optimizer.step()
        bias_optimizer.step()

    torch.testing.assert_close(weight, separate_weight, rtol=0, atol=0)
    torch.testing.assert_close(bias, separate_bias, rtol=0, atol=0)


def test_param_groups_can_override_other_hyperparameters(quadratic):
    theta = torch.tensor(quadratic.theta0, requires_grad=True)
    frozen = torch.zeros(2, requires_grad=True)
    optimizer = build_optimizer("momentum", [{"params": [theta], "alpha": 0.5}, {"params": [frozen]}])
    assert [group["alpha"] for group in optimizer.param_groups] == [0.5, 0.9]


@pytest.mark.parametrize("name", LECTURE_NAMES)
def test_param_group_with_invalid_value_is_rejected(name):
    params = torch.zeros(2, requires_grad=True)
    with pytest.raises(ConfigError, match="'lr' must be >= 0"):
        build_optimizer(name, [{"params": [params], "lr": -0.1}])
    optimizer = build_optimizer(name, [params])
    with pytest.raises(ConfigError, match="'weight_decay' must be >= 0"):
        optimizer.add_param_group({"params": [torch.zeros(2, requires_grad=True)], "weight_decay": -1.0})
    assert len(optimizer.param_groups) == 1


@pytest.mark.parametrize("name", ALL_NAMES)
def test_state_dict_round_trip_continues_identically(name, least_squares):
    model = least_squares.model()
    optimizer = build_optimizer(name, model.parameters(), lr=TEST_LRS[name], weight_decay=0.01)
    train(model, optimizer, least_squares, steps=3)

    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, buffer)
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)
    resumed_model = least_squares.model()
    resumed_model.load_state_dict(checkpoint["model"])
    resumed = build_optimizer(name, resumed_model.parameters(), lr=TEST_LRS[name], weight_decay=0.01)
    resumed.load_state_dict(checkpoint["optimizer"])

    train(model, optimizer, least_squares, steps=3)
    train(resumed_model, resumed, least_squares, steps=3)
    for original, restored in zip(model.parameters(), resumed_model.parameters(), strict=True):
        torch.testing.assert_close(restored, original, rtol=0, atol=0)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_params_without_grad_are_skipped(name):
    used = torch.ones(3, requires_grad=True)
    unused = torch.ones(3, requires_grad=True)
    optimizer = build_optimizer(name, [used, unused], weight_decay=0.1)
    (used * torch.arange(1.0, 4.0)).sum().backward()
    assert unused.grad is None
    optimizer.step()
    assert not torch.equal(used, torch.ones(3))
    assert torch.equal(unused, torch.ones(3))
    assert unused not in optimizer.state


@pytest.mark.parametrize("name", LECTURE_NAMES)
def test_step_calls_the_closure_with_grad_enabled_and_returns_its_loss(name, least_squares):
    model = least_squares.model()
    optimizer = build_optimizer(name, model.parameters())
    before = model.weight.detach().clone()

    def closure():
        optimizer.zero_grad()
        loss = least_squares.loss(model)
        loss.backward()
        return loss

    loss = optimizer.step(closure)
    assert isinstance(loss, torch.Tensor)
    torch.testing.assert_close(loss, least_squares.loss(least_squares.model()))
    assert not torch.equal(model.weight, before)


# --------------------------------------------------------------------------------------------
# The table and build_optimizer
# --------------------------------------------------------------------------------------------


def test_optimizer_names_are_the_table_keys_in_display_order():
    assert optimizer_names() == ALL_NAMES
    assert list(OPTIMIZERS) == ALL_NAMES
    assert all(spec.name == name for name, spec in OPTIMIZERS.items())


def test_every_spec_has_a_title_formula_and_positive_default_lr():
    assert OPTIMIZERS["momentum"].title == "SGD with momentum"
    for spec in OPTIMIZERS.values():
        assert spec.title and spec.formula and "\n" not in spec.formula
        assert spec.default_lr > 0


@pytest.mark.parametrize("name", LECTURE_NAMES)
def test_table_defaults_match_the_lecture_class_signatures(name):
    spec = OPTIMIZERS[name]
    signature = inspect.signature(spec.cls)
    hyperparameters = {
        key: parameter.default
        for key, parameter in signature.parameters.items()
        if key not in {"params", "lr", "weight_decay"}
    }
    assert hyperparameters == dict(spec.defaults)
    assert signature.parameters["weight_decay"].default == 0.0


def test_book_defaults_of_the_lecture_classes():
    params = [torch.zeros(1, requires_grad=True)]
    assert Momentum(params, lr=0.1).defaults["alpha"] == 0.9
    assert AdaGrad(params, lr=0.1).defaults["delta"] == 1e-7
    assert RMSProp(params, lr=0.1).defaults == {"lr": 0.1, "rho": 0.9, "delta": 1e-6, "weight_decay": 0.0}
    assert Adam(params).defaults == {"lr": 1e-3, "rho1": 0.9, "rho2": 0.999, "delta": 1e-8, "weight_decay": 0.0}


@pytest.mark.parametrize("name", ALL_NAMES)
def test_build_optimizer_uses_the_table_defaults(name):
    spec = OPTIMIZERS[name]
    optimizer = build_optimizer(name, [torch.zeros(2, requires_grad=True)])
    assert type(optimizer) is spec.cls
    group = optimizer.param_groups[0]
    assert group["lr"] == spec.default_lr
    assert group["weight_decay"] == 0.0
    for key, value in spec.defaults.items():
        assert group[key] == value


def test_build_optimizer_applies_lr_weight_decay_and_overrides():
    optimizer = build_optimizer("rmsprop", [torch.zeros(2, requires_grad=True)], lr=0.02, weight_decay=1e-4, rho=0.95)
    group = optimizer.param_groups[0]
    assert (group["lr"], group["weight_decay"], group["rho"], group["delta"]) == (0.02, 1e-4, 0.95, 1e-6)


def test_spec_defaults_are_read_only():
    with pytest.raises(TypeError):
        OPTIMIZERS["adam"].defaults["rho1"] = 0.5  # type: ignore[index]


def test_unknown_name_error_lists_all_valid_names():
    with pytest.raises(ConfigError) as excinfo:
        build_optimizer("lbfgs", [torch.zeros(1, requires_grad=True)])
    assert str(excinfo.value) == (
        "unknown optimizer 'lbfgs'; choose one of: sgd, momentum, adagrad, rmsprop, adam, adamw"
    )


def test_unknown_override_is_rejected_naming_the_accepted_ones():
    with pytest.raises(ConfigError) as excinfo:
        build_optimizer("momentum", [torch.zeros(1, requires_grad=True)], beta=0.9)
    message = str(excinfo.value)
    assert "'beta'" in message and "'momentum'" in message
    assert message.endswith("it accepts: lr, weight_decay, alpha")


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("sgd", {"lr": -0.1}, "'lr' must be >= 0"),
        ("sgd", {"weight_decay": -1e-4}, "'weight_decay' must be >= 0"),
        ("adam", {"lr": float("nan")}, "'lr' must be a finite number"),
        ("sgd", {"lr": "0.1"}, "'lr' must be a finite number"),
        ("momentum", {"alpha": 1.0}, r"'alpha' must lie in \[0, 1\)"),
        ("momentum", {"alpha": True}, "'alpha' must be a finite number"),
        ("adagrad", {"delta": -1e-7}, "'delta' must be >= 0"),
        ("rmsprop", {"rho": -0.1}, r"'rho' must lie in \[0, 1\)"),
        ("rmsprop", {"rho": 1.0}, r"'rho' must lie in \[0, 1\)"),
        ("adam", {"rho1": 1.5}, r"'rho1' must lie in \[0, 1\)"),
        ("adam", {"rho2": -0.5}, r"'rho2' must lie in \[0, 1\)"),
        ("adamw", {"lr": -1.0}, "'lr' must be >= 0"),
        ("adamw", {"betas": (0.9, 1.0)}, r"'betas' must lie in \[0, 1\)"),
        ("adamw", {"betas": 0.9}, "'betas' must be a pair"),
        ("adamw", {"eps": -1.0}, "invalid settings for optimizer 'adamw'"),
    ],
)
def test_invalid_hyperparameters_are_rejected(name, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        build_optimizer(name, [torch.zeros(1, requires_grad=True)], **kwargs)


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [
        (SGD, {"lr": -1.0}),
        (Momentum, {"lr": 0.1, "alpha": -0.1}),
        (AdaGrad, {"lr": 0.1, "delta": float("inf")}),
        (RMSProp, {"lr": 0.1, "rho": 1.0}),
        (Adam, {"rho2": 1.0}),
        (Adam, {"weight_decay": -0.1}),
    ],
)
def test_lecture_classes_reject_invalid_values_when_built_directly(cls, kwargs):
    with pytest.raises(ConfigError, match=cls.__name__):
        cls([torch.zeros(1, requires_grad=True)], **kwargs)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_each_optimizer_decreases_a_convex_loss(name, least_squares):
    with torch.no_grad():
        initial = least_squares.loss(least_squares.model()).item()

    model = least_squares.model()
    with_table_lr = train(model, build_optimizer(name, model.parameters()), least_squares, steps=40)
    assert with_table_lr < initial

    model = least_squares.model()
    with_larger_lr = train(model, build_optimizer(name, model.parameters(), lr=TEST_LRS[name]), least_squares, steps=40)
    assert with_larger_lr < 0.1 * initial
