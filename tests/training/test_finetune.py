import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.training.conftest import make_image_folder
from training import checkpoint as ckpt
from training.errors import Cancelled, NonFiniteLoss, TrainingError
from training.finetune import finetune
from training.predict import Predictor
from training.reporting import NullReporter, Reporter


class Recorder(NullReporter):
    """Records every call; ``stop_when(event_list)`` decides cancellation."""

    def __init__(self, stop_when=None):
        self.events = []
        self.stop_when = stop_when

    def on_phase_start(self, **kw):
        self.events.append(("phase", kw))

    def on_batch(self, **kw):
        self.events.append(("batch", kw))

    def on_epoch_end(self, **kw):
        self.events.append(("epoch", kw))

    def on_plan(self, **kw):
        self.events.append(("plan", kw))

    def should_stop(self):
        return bool(self.stop_when and self.stop_when(self.events))


def _weights(out_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(out_dir / "model.safetensors")


def _equal(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_run_writes_a_complete_directory_and_reports_each_epoch(tiny_config, tmp_path):
    rec = Recorder()
    assert isinstance(rec, Reporter)
    result = finetune(tiny_config, out_dir=tmp_path / "run", reporter=rec)
    out = tmp_path / "run"
    assert sorted(p.name for p in out.iterdir()) == ["history.json", "meta.json", "model.safetensors", "test.json", "validation.json"]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["backbone"] == "cifar10_resnet20" and meta["class_names"] == ["blue", "green", "red"]
    assert meta["preprocessing"]["image_size"] == 32 and meta["config"]["head_epochs"] == 2
    assert {"torch", "timm", "torchvision"} <= set(meta["versions"]) and "val_acc" in meta["metrics"]
    history = json.loads((out / "history.json").read_text())
    assert [(h["phase"], h["epoch"]) for h in history] == [("head", 1), ("head", 2), ("finetune", 1), ("finetune", 2)]
    assert all({"train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"} <= set(h) for h in history)
    val = json.loads((out / "validation.json").read_text())
    n_val = len(val["predictions"])
    assert n_val == 6 and sum(map(sum, val["confusion_matrix"])) == n_val
    assert set(val["per_class"]["red"]) >= {"precision", "recall"}
    p = val["predictions"][0]
    assert (Path(tiny_config.data_dir) / p["path"]).is_file() and p["true"] in meta["class_names"]
    phases = [e[1]["phase"] for e in rec.events if e[0] == "phase"]
    assert phases == ["head", "finetune"]
    assert [e[1]["epoch"] for e in rec.events if e[0] == "epoch"] == [1, 2, 1, 2]
    assert sum(1 for e in rec.events if e[0] == "batch") == 4 * 3  # 24 train images (6 val, 6 test) / batch 8
    assert result.history == history


def test_cached_head_training_gives_the_same_head_as_the_plain_path(tiny_config, tmp_path):
    config = tiny_config.replace(finetune_epochs=0, head_epochs=3, head_dropout=0.0)
    cached = finetune(config, out_dir=tmp_path / "cached")
    plain = finetune(config.replace(cache_features=False), out_dir=tmp_path / "plain")
    a, b = _weights(tmp_path / "cached"), _weights(tmp_path / "plain")
    assert torch.allclose(a["head.weight"], b["head.weight"], atol=1e-5)
    assert torch.allclose(a["head.bias"], b["head.bias"], atol=1e-5)
    assert all(torch.equal(a[k], b[k]) for k in a if not k.startswith("head."))
    for ha, hb in zip(cached.history, plain.history):
        assert ha["val_loss"] == pytest.approx(hb["val_loss"], abs=1e-5)


def test_a_seeded_cpu_run_is_bitwise_reproducible(tiny_config, tmp_path):
    config = tiny_config.replace(augmentation="light", feature_views=2, head_dropout=0.3)
    finetune(config, out_dir=tmp_path / "a")
    finetune(config, out_dir=tmp_path / "b")
    assert _equal(_weights(tmp_path / "a"), _weights(tmp_path / "b"))
    finetune(config.replace(seed=1), out_dir=tmp_path / "c")
    assert not _equal(_weights(tmp_path / "a"), _weights(tmp_path / "c"))


def test_full_unfreeze_with_augmentation_trains_from_images_reproducibly(tiny_config, tmp_path):
    config = tiny_config.replace(unfreeze_blocks=-1, augmentation="standard", head_epochs=1, finetune_epochs=1)
    finetune(config, out_dir=tmp_path / "a")
    finetune(config, out_dir=tmp_path / "b")
    a = _weights(tmp_path / "a")
    assert _equal(a, _weights(tmp_path / "b"))
    pretrained = torch.load(config.backbone_weights, weights_only=True)["state_dict"]
    assert not torch.equal(a["stages.0.0.weight"], pretrained["conv1.weight"])  # the stem trained too


def test_early_stopping_stops_and_restores_the_best_weights(tiny_config, tmp_path):
    # Validation photos carry the wrong labels, so validation loss rises as training improves.
    val = make_image_folder(tmp_path / "val", {"blue": 3, "green": 3, "red": 3}, seed=5)
    for a, b in (("blue", "tmp"), ("red", "blue"), ("tmp", "red")):
        (val / a).rename(val / b)
    config = tiny_config.replace(
        val_dir=str(val), head_epochs=6, finetune_epochs=0, schedule="constant", early_stopping_patience=1
    )
    result = finetune(config, out_dir=tmp_path / "es")
    losses = [h["val_loss"] for h in result.history]
    assert len(losses) < 6  # stopped early
    best = min(range(len(losses)), key=losses.__getitem__)
    assert result.metrics["restored_best"] and result.metrics["best_epoch"]["epoch"] == best + 1
    assert result.metrics["val_loss"] == pytest.approx(losses[best], abs=1e-6)
    reference = finetune(config.replace(head_epochs=best + 1, early_stopping_patience=0), out_dir=tmp_path / "ref")
    assert reference.history[-1]["val_loss"] == pytest.approx(losses[best], abs=1e-7)
    assert _equal(_weights(tmp_path / "es"), _weights(tmp_path / "ref"))


def test_cancel_saves_a_checkpoint_and_resume_finishes_like_an_uninterrupted_run(tiny_config, tmp_path):
    finetune(tiny_config, out_dir=tmp_path / "full")

    def after_first_finetune_epoch(events):
        return any(e[0] == "epoch" and e[1]["phase"] == "finetune" for e in events)

    out = tmp_path / "cancelled"
    with pytest.raises(Cancelled, match="resume"):
        finetune(tiny_config, out_dir=out, reporter=Recorder(after_first_finetune_epoch))
    assert (out / "checkpoint" / "last.json").is_file() and not (out / "model.safetensors").exists()
    progress = json.loads((out / "checkpoint" / "last.json").read_text())
    assert (progress["phase_index"], progress["epoch"]) == (1, 1)
    assert not list((out / "checkpoint").glob(".*tmp"))

    rec = Recorder()
    result = finetune(tiny_config, out_dir=out, reporter=rec, resume=True)
    # The checkpoint's last epoch is reported again first (a lost worker may never have reported it).
    assert [(e[1]["phase"], e[1]["epoch"]) for e in rec.events if e[0] == "epoch"] == [("finetune", 1), ("finetune", 2)]
    assert len(result.history) == 4
    assert _equal(_weights(out), _weights(tmp_path / "full"))
    assert not (out / "checkpoint").exists()


def test_an_epoch_checkpointed_but_never_reported_is_reported_by_the_resumed_run(tiny_config, tmp_path):
    """The worker dies after an epoch's checkpoint and before its report: the resumed run reports it."""

    class Lost(Exception):
        pass

    class DiesBeforeReporting(Recorder):
        def on_epoch_end(self, **kw):
            if kw["phase"] == "finetune":
                raise Lost  # the machine is gone between the checkpoint and the report
            super().on_epoch_end(**kw)

    out = tmp_path / "lost"
    first = DiesBeforeReporting()
    with pytest.raises(Lost):
        finetune(tiny_config, out_dir=out, reporter=first)
    assert [e[1]["phase"] for e in first.events if e[0] == "epoch"] == ["head"] * tiny_config.head_epochs
    progress = json.loads((out / "checkpoint" / "last.json").read_text())
    assert (progress["phase_index"], progress["epoch"]) == (1, 1)  # finetune epoch 1 saved, not reported
    rec = Recorder()
    finetune(tiny_config, out_dir=out, reporter=rec, resume=True)
    assert [(e[1]["phase"], e[1]["epoch"]) for e in rec.events if e[0] == "epoch"] == [("finetune", 1), ("finetune", 2)]


def test_another_host_resumes_from_a_copy_of_the_run_folder_with_its_own_paths(tiny_config, tmp_path):
    """Object storage: the worker that resumes has the dataset and the run folder at other paths."""
    import dataclasses

    finetune(tiny_config, out_dir=tmp_path / "full")

    def after_first_finetune_epoch(events):
        return any(e[0] == "epoch" and e[1]["phase"] == "finetune" for e in events)

    with pytest.raises(Cancelled):
        finetune(tiny_config, out_dir=tmp_path / "host1", reporter=Recorder(after_first_finetune_epoch))
    shutil.copytree(tmp_path / "host1", tmp_path / "host2")
    shutil.copytree(tiny_config.data_dir, tmp_path / "data-on-host2")
    elsewhere = dataclasses.replace(tiny_config, data_dir=str(tmp_path / "data-on-host2"))
    rec = Recorder()
    finetune(elsewhere, out_dir=tmp_path / "host2", reporter=rec, resume=True)
    # The checkpoint's last epoch is reported again first (a lost worker may never have reported it).
    assert [(e[1]["phase"], e[1]["epoch"]) for e in rec.events if e[0] == "epoch"] == [("finetune", 1), ("finetune", 2)]
    assert _equal(_weights(tmp_path / "host2"), _weights(tmp_path / "full"))

    # What the run trains on still has to match: another learning rate is refused.
    shutil.copytree(tmp_path / "host1", tmp_path / "host3")
    with pytest.raises(TrainingError, match="different configuration"):
        finetune(dataclasses.replace(elsewhere, finetune_lr=5e-4), out_dir=tmp_path / "host3", resume=True)


def test_cancel_during_feature_caching_raises_cancelled_and_resume_starts_over(tiny_config, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(Cancelled):
        finetune(tiny_config, out_dir=out, reporter=Recorder(lambda events: True))
    assert (out / "checkpoint" / "last.json").is_file()
    result = finetune(tiny_config, out_dir=out, resume=True)
    assert len(result.history) == 4


def test_non_finite_loss_raises(tiny_config, tmp_path):
    with pytest.raises(NonFiniteLoss):
        finetune(tiny_config.replace(optimizer="sgd", head_lr=1e30), out_dir=tmp_path / "nan")


def test_optimizer_is_rebuilt_for_the_finetune_phase_with_a_lower_backbone_lr(tiny_config, tmp_path, monkeypatch):
    import training.optim

    calls = []
    real = training.optim.build_optimizer

    def spy(name, groups, **kw):
        calls.append([(g["name"], g["lr"]) for g in groups])
        return real(name, groups, **kw)

    monkeypatch.setattr(training.optim, "build_optimizer", spy)
    finetune(tiny_config.replace(backbone_lr_mult=0.1), out_dir=tmp_path / "run")
    assert len(calls) == 2
    assert {n for n, _ in calls[0]} == {"head", "head_no_decay"}
    lrs = dict(calls[1])
    assert lrs["head"] == pytest.approx(1e-3) and lrs["backbone"] == pytest.approx(1e-4)


def test_unreadable_files_are_skipped_with_a_warning_listing_them(tiny_config, tmp_path):
    data = Path(tiny_config.data_dir)
    (data / "red" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (data / "blue" / "readme.txt").write_text("not an image")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = finetune(tiny_config.replace(finetune_epochs=0), out_dir=tmp_path / "run")
    message = " ".join(str(w.message) for w in caught)
    assert "red/broken.png" in message and "blue/readme.txt" in message
    assert {s[0] for s in result.skipped} == {"red/broken.png", "blue/readme.txt"}


def test_predictor_rebuilds_the_model_from_the_run_directory_alone(tiny_config, tmp_path, monkeypatch):
    finetune(tiny_config, out_dir=tmp_path / "run")
    moved = tmp_path / "moved"
    shutil.move(tmp_path / "run", moved)

    def no_pickles(*args, **kwargs):
        raise AssertionError("Predictor must not read pretrained weight files")

    monkeypatch.setattr(torch, "load", no_pickles)
    predictor = Predictor.from_dir(moved)
    from PIL import Image

    images = [Image.open(p) for p in sorted(Path(tiny_config.data_dir).glob("red/*.png"))[:3]]
    top = predictor.predict(images, top_k=2)
    assert len(top) == 3 and all(len(t) == 2 for t in top)
    assert all(abs(sum(p for _, p in t) - 1) < 1 or t[0][1] >= t[1][1] for t in top)
    probs = predictor.probabilities(images)
    assert probs.shape == (3, 3) and torch.allclose(probs.sum(1), torch.ones(3))
    assert predictor.class_names == ["blue", "green", "red"] and predictor.meta["backbone"] == "cifar10_resnet20"


def test_checkpoints_are_written_atomically(tmp_path, monkeypatch):
    target = tmp_path / "file.json"
    ckpt.atomic_write_json(target, {"a": 1})

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.os, "replace", crash)
    with pytest.raises(OSError):
        ckpt.atomic_write_json(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["file.json"]


def test_optimizer_state_round_trips_through_safetensors_and_json(tmp_path):
    from training.optim import build_optimizer

    w = torch.nn.Parameter(torch.randn(3, 2))
    opt = build_optimizer("adam", [w], lr=0.1)
    w.grad = torch.ones_like(w)
    opt.step()
    tensors, rest = ckpt.optimizer_state_to_flat(opt.state_dict())
    ckpt.save_tensors(tmp_path / "o.safetensors", tensors)
    json.dumps(rest)
    again = ckpt.optimizer_state_from_flat(ckpt.load_tensors(tmp_path / "o.safetensors"), json.loads(json.dumps(rest)))
    opt2 = build_optimizer("adam", [torch.nn.Parameter(w.detach().clone())], lr=0.1)
    opt2.load_state_dict(again)
    for key, value in opt.state_dict()["state"][0].items():
        other = opt2.state_dict()["state"][0][key]
        assert torch.equal(torch.as_tensor(value), torch.as_tensor(other))


def test_the_default_recipe_solves_the_head_plans_to_the_budget_and_reports_test_once(tiny_config, tmp_path):
    config = tiny_config.replace(head_solver="lbfgs", budget_minutes=2.0, finetune_epochs=None, augmentation="light")
    rec = Recorder()
    result = finetune(config, out_dir=tmp_path / "run", reporter=rec)
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    plan = meta["plan"]
    assert plan["path"] == "cached" and plan["views"] >= 1 and plan["finetune_epochs"] >= 1 and plan["budget_s"] == 120
    # The plan reaches the reporter before the feature pass, naming the network (an auto run's choice).
    [sent] = [kw["plan"] for kind, kw in rec.events if kind == "plan"]
    assert sent["backbone"] == meta["backbone"] and sent["views"] == plan["views"]
    assert rec.events.index(("plan", {"plan": sent})) < min(i for i, (kind, _) in enumerate(rec.events) if kind == "phase")
    heads = [h for h in result.history if h["phase"] == "head"]
    assert len(heads) == 1 and meta["head_fit"]["solver"] == "lbfgs" and meta["head_fit"]["path"]
    m = result.metrics
    assert m["test_images"] == 6 and m["train_images"] == 24 and m["val_images"] == 6
    assert {"test_acc", "head_test_acc", "finetune_gain_test", "kept", "finetune_gain_val"} <= set(m)
    assert m["finetune_gain_test"] == pytest.approx(m["test_acc"] - m["head_test_acc"])
    # The last fine-tune epoch's test score is recorded whichever weights are kept.
    assert 0.0 <= m["finetuned_test_acc"] <= 1.0
    if m["kept"]["phase"] == "finetune":
        assert m["finetuned_test_acc"] == pytest.approx(m["test_acc"])
    assert m["kept"]["phase"] in ("head", "finetune")
    test = json.loads((tmp_path / "run" / "test.json").read_text())
    assert len(test["predictions"]) == 6 and test["top1"] == m["test_acc"]
    val_paths = {p["path"] for p in json.loads((tmp_path / "run" / "validation.json").read_text())["predictions"]}
    assert val_paths.isdisjoint(p["path"] for p in test["predictions"])


def test_a_fine_tune_that_lowers_validation_accuracy_keeps_the_converged_head(tiny_config, tmp_path):
    config = tiny_config.replace(head_solver="lbfgs", finetune_epochs=2, optimizer="sgd", finetune_lr=50.0, warmup_epochs=0)
    result = finetune(config, out_dir=tmp_path / "run")
    heads = [h for h in result.history if h["phase"] == "head"]
    tunes = [h for h in result.history if h["phase"] == "finetune"]
    assert tunes[-1]["val_acc"] < heads[-1]["val_acc"]
    assert result.metrics["kept"]["phase"] == "head" and "head is kept" in result.metrics["kept"]["why"]
    assert result.metrics["val_acc"] == pytest.approx(heads[-1]["val_acc"])


def test_auto_backbone_records_its_choice_and_a_resumed_run_keeps_it(tiny_config, tmp_path, monkeypatch):
    import training.finetune as ft

    calls = []

    def fake_choice(**kw):
        calls.append(kw)
        return {"name": "cifar10_resnet20", "image_size": 32, "reason": "fits", "timed_ms_per_photo": {"cifar10_resnet20@32": 1.0}}

    monkeypatch.setattr(ft, "choose_auto_backbone", fake_choice)
    config = tiny_config.replace(backbone="auto")
    out = tmp_path / "run"

    def after_head(events):
        return any(e[0] == "epoch" for e in events)

    with pytest.raises(Cancelled):
        finetune(config, out_dir=out, reporter=Recorder(after_head))
    assert calls[0]["n_photos"] == 36 and calls[0]["budget_s"] == config.budget_seconds
    monkeypatch.setattr(ft, "choose_auto_backbone", lambda **kw: pytest.fail("a resumed run must keep its choice"))
    result = finetune(config, out_dir=out, resume=True)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["backbone"] == "cifar10_resnet20" and meta["backbone_choice"]["reason"] == "fits"
    assert result.metrics["backbone"] == "cifar10_resnet20" and result.metrics["image_size"] == 32
