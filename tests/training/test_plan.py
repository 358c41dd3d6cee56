"""The phase plan fits the views and epochs to the time budget."""

import torch

from training.plan import MAX_VIEWS, Costs, choose_backbone, make_plan

CPU = Costs(prefix_forward=0.015, tail_step=0.002, tail_forward=0.0007, full_step=None, head_fit=0.001)


def _plan(**kw):
    args = {"budget_s": 300.0, "spent_s": 10.0, "n_train": 500, "n_val": 110, "n_test": 110, "costs": CPU, "augment": True}
    return make_plan(**{**args, **kw})


def test_a_small_dataset_gets_many_views_and_fits_the_budget():
    plan = _plan()
    assert plan.path == "cached" and plan.views == MAX_VIEWS and plan.finetune_epochs >= 3
    assert plan.total_s <= 300 and not plan.over_budget


def test_a_large_dataset_gets_fewer_views_and_still_fits():
    small, large = _plan(), _plan(n_train=3400, n_val=720, n_test=720)
    assert 1 <= large.views < small.views and large.total_s <= 300 and not large.over_budget


def test_when_nothing_fits_the_plan_says_so_with_an_honest_estimate():
    plan = _plan(n_train=30000, n_val=6000, n_test=6000)
    assert plan.views == 1 and plan.over_budget and plan.total_s > 300 and "over the budget" in plan.reason


def test_explicit_views_and_epochs_are_kept_and_only_estimated():
    plan = _plan(views=3, finetune_epochs=2)
    assert (plan.views, plan.finetune_epochs) == (3, 2) and plan.estimates["features"] > 0


def test_without_augmentation_one_view_is_enough():
    assert _plan(augment=False).views == 1


def test_a_gpu_picks_the_whole_network_when_ten_epochs_of_it_fit():
    gpu = Costs(prefix_forward=0.0004, tail_step=0.0001, tail_forward=0.00005, full_step=0.001, head_fit=0.0001)
    plan = _plan(costs=gpu, allow_images_path=True)
    assert plan.path == "images" and plan.unfreeze_blocks is None and plan.finetune_epochs >= 10
    assert _plan(costs=gpu, allow_images_path=False).path == "cached"
    assert _plan(costs=gpu, allow_images_path=True, budget_s=20.0).path == "cached"


def test_no_budget_uses_the_defaults():
    plan = _plan(budget_s=None)
    assert plan.budget_s is None and plan.views >= 1 and plan.finetune_epochs >= 1


def test_classes_the_pretrained_network_knows_get_a_short_plan():
    plan = _plan(classes_known=True)
    assert plan.views == 1 and plan.finetune_epochs == 0 and plan.total_s < _plan().total_s


# backbone="auto": the strongest candidate whose pass over every photo fits half the budget left
CANDIDATES = [("efficientnet_lite0", 224), ("efficientnet_lite1", 240), ("efficientnet_lite2", 260)]
FAKE_MS = {"efficientnet_lite0": 20.0, "efficientnet_lite1": 30.0, "efficientnet_lite2": 45.0}


def _choose(budget_s, n_photos, timed=None):
    def time_forward(name, size):
        if timed is not None:
            timed.append(name)
        return FAKE_MS[name] / 1000

    return choose_backbone(CANDIDATES, time_forward=time_forward, budget_s=budget_s, spent_s=10.0, n_photos=n_photos)


def test_auto_picks_the_larger_backbone_when_the_budget_allows_and_times_only_that_one():
    timed = []
    option, options, reason = _choose(300.0, 800, timed)
    assert option.name == "efficientnet_lite2" and option.image_size == 260 and timed == ["efficientnet_lite2"]
    assert option.forward_s == 0.045 and "efficientnet_lite2" in reason


def test_auto_steps_down_to_a_backbone_that_fits_and_to_lite0_when_none_does():
    assert _choose(300.0, 5000)[0].name == "efficientnet_lite0"  # 5000 x 45/30 ms > 145 s; x 20 ms = 100 s
    assert _choose(900.0, 5000)[0].name == "efficientnet_lite2"  # 225 s <= 445 s
    assert _choose(300.0, 4000)[0].name == "efficientnet_lite1"  # 120 s <= 145 s < 180 s
    option, options, reason = _choose(60.0, 30000)
    assert option.name == "efficientnet_lite0" and len(options) == 3 and "cheapest" in reason


def test_auto_without_a_budget_takes_the_strongest_untimed():
    option, options, _ = _choose(None, 10**6)
    assert option.name == "efficientnet_lite2" and options == []


def test_auto_for_classes_the_pretrained_network_knows_tries_lite2_at_300_px_first(monkeypatch):
    """With the pretrained rows as the head's prior Lite2 at 300 px measured best
    (bench/known_classes.py); it still has to fit the budget, and the ladder goes down from it."""
    from training.backbones import registry
    from training.backbones.base import Backbone

    timed = []

    def fake_time(self, size, *, device):
        timed.append(self.name)
        return FAKE_MS[self.name] / 1000

    monkeypatch.setattr(Backbone, "time_forward", fake_time)
    choice = registry.choose_auto_backbone(image_size=None, device=torch.device("cpu"), budget_s=300.0, spent_s=1.0,
                                           n_photos=800, classes_known=True, photos_known=True)
    assert (choice["name"], choice["image_size"]) == ("efficientnet_lite2", 300) and timed == ["efficientnet_lite2"]
    assert "knows every class" in choice["reason"]
    timed.clear()
    choice = registry.choose_auto_backbone(image_size=None, device=torch.device("cpu"), budget_s=300.0, spent_s=1.0,
                                           n_photos=800, classes_known=False)
    assert choice["name"] == "efficientnet_lite2" and timed == ["efficientnet_lite2"]
    timed.clear()
    choice = registry.choose_auto_backbone(image_size=None, device=torch.device("cpu"), budget_s=60.0, spent_s=1.0,
                                           n_photos=5000, classes_known=True, photos_known=True)
    assert choice["name"] == "efficientnet_lite0" and timed == ["efficientnet_lite2"] * 2 + ["efficientnet_lite1", "efficientnet_lite0"]


def test_auto_for_photos_of_classes_the_pretrained_network_has_also_tries_a_larger_input(monkeypatch):
    """Every class matched by name but no head init (dogs with --no-head-init): Lite2 at 300 px is
    timed first and taken when its pass fits; when it does not, Lite2 at its own 260 px. Photos of
    other classes, or an explicit image size, never get the larger input."""
    from training.backbones import registry
    from training.backbones.base import Backbone

    timed = []

    def fake_time(self, size, *, device):
        timed.append((self.name, size))
        return FAKE_MS[self.name] / 1000 * (size / self.input_size) ** 2

    monkeypatch.setattr(Backbone, "time_forward", fake_time)

    def choose(budget_s, **kw):
        timed.clear()
        return registry.choose_auto_backbone(device=torch.device("cpu"), budget_s=budget_s, spent_s=0.0, n_photos=800, **kw)

    choice = choose(300.0, image_size=None, photos_known=True)  # 800 x 60 ms = 48 s <= 150 s
    assert (choice["name"], choice["image_size"]) == ("efficientnet_lite2", 300) and timed == [("efficientnet_lite2", 300)]
    choice = choose(90.0, image_size=None, photos_known=True)  # 48 s > 45 s >= 800 x 45 ms = 36 s
    assert (choice["name"], choice["image_size"]) == ("efficientnet_lite2", 260)
    assert timed == [("efficientnet_lite2", 300), ("efficientnet_lite2", 260)]
    assert choose(300.0, image_size=None)["image_size"] == 260 and timed == [("efficientnet_lite2", 260)]
    assert choose(300.0, image_size=224, photos_known=True)["image_size"] == 224 and timed == [("efficientnet_lite2", 224)]
