import pytest
import torch
import torch.nn.functional as F

from training.backbones import get_backbone
from training.engine import classification_report, evaluate, lr_factor, train_one_epoch
from training.errors import Cancelled, NonFiniteLoss
from training.optim import build_optimizer


def test_schedules_start_and_end_where_they_should():
    assert lr_factor("constant", 7, 10) == 1.0
    assert lr_factor("cosine", 0, 10) == pytest.approx(1.0) and lr_factor("cosine", 10, 10) == pytest.approx(0.0)
    one = [lr_factor("onecycle", s, 100) for s in range(101)]
    assert one[0] == pytest.approx(1 / 25) and max(one) == pytest.approx(1.0, abs=1e-3) and one[-1] < 1e-3


def _head_only():
    torch.manual_seed(0)
    model, _ = get_backbone("cifar10_resnet20").transfer_model(3, pretrained=False)
    model.freeze_backbone()
    return model


def _feature_batches(n=4):
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(8, 64, generator=g), torch.randint(0, 3, (8,), generator=g)) for _ in range(n)]


def test_non_finite_loss_raises():
    model = _head_only()
    opt = build_optimizer("sgd", model.head.parameters(), lr=1e30)
    batches = [(x * 1e30, y) for x, y in _feature_batches()]
    with pytest.raises(NonFiniteLoss, match="lower the learning rate"):
        train_one_epoch(model, batches, opt, start_stage=model.num_stages)


def test_should_stop_cancels_after_the_batch():
    model = _head_only()
    opt = build_optimizer("adam", model.head.parameters(), lr=1e-3)
    seen = []
    with pytest.raises(Cancelled):
        train_one_epoch(
            model, _feature_batches(), opt, start_stage=model.num_stages, on_batch=lambda b, loss: seen.append(b), should_stop=lambda: True
        )
    assert seen == [1]


def test_train_one_epoch_lowers_the_loss_and_reports_metrics():
    model = _head_only()
    opt = build_optimizer("adam", model.head.parameters(), lr=1e-2)
    batches = _feature_batches()
    before = evaluate(model, batches, start_stage=model.num_stages)["loss"]
    for _ in range(5):
        m = train_one_epoch(model, batches, opt, start_stage=model.num_stages)
    after = evaluate(model, batches, start_stage=model.num_stages)
    assert after["loss"] < before and set(m) >= {"loss", "acc", "n", "lr", "seconds"} and after["n"] == 32


def test_evaluate_runs_under_inference_mode():
    model = _head_only()
    seen = []
    model.head.register_forward_hook(lambda mod, inp, out: seen.append(torch.is_inference_mode_enabled()))
    evaluate(model, _feature_batches(1), start_stage=model.num_stages)
    assert seen == [True]


def test_classification_report_builds_confusion_matrix_and_precision_recall():
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.4, 0.6]])
    targets = torch.tensor([0, 1, 1, 1])
    r = classification_report(probs, targets, ["a", "b"])
    assert r["confusion_matrix"] == [[1, 0], [1, 2]]
    assert r["per_class"]["a"]["precision"] == pytest.approx(0.5) and r["per_class"]["b"]["recall"] == pytest.approx(2 / 3)
    assert r["top1"] == pytest.approx(0.75) and r["n"] == 4


def test_mixup_trains_on_a_batch_mixed_with_its_shuffled_copy():
    """The loss is λ·CE(mixed, y) + (1-λ)·CE(mixed, y[perm]), λ ~ Beta(a, a) and perm drawn from
    torch's global generator in that order (what the caller seeds per epoch)."""
    model = _head_only()
    opt = build_optimizer("sgd", model.head.parameters(), lr=0.0)  # the head stays as it is
    (x, y), = _feature_batches(1)
    torch.manual_seed(7)
    got = train_one_epoch(model, [(x, y)], opt, start_stage=model.num_stages, mixup=0.4, mixed_precision=False)["loss"]
    torch.manual_seed(7)
    lam = float(torch.distributions.Beta(0.4, 0.4).sample())
    perm = torch.randperm(len(y))
    model.eval()
    with torch.no_grad():
        logits = model.forward_from(lam * x + (1 - lam) * x[perm], model.num_stages)
        want = lam * F.cross_entropy(logits, y) + (1 - lam) * F.cross_entropy(logits, y[perm])
        plain = F.cross_entropy(model.forward_from(x, model.num_stages), y)
    assert 0.0 < lam < 1.0 and got == pytest.approx(float(want), rel=1e-5)
    assert abs(got - float(plain)) > 1e-3
