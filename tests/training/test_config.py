import json

import pytest

from training.config import TrainConfig, recipe_lrs
from training.errors import ConfigError


def test_config_round_trips_through_json():
    config = TrainConfig(data_dir="/data", val_dir="/val", unfreeze_blocks=-1, schedule="onecycle")
    again = TrainConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config


def test_from_dict_rejects_unknown_keys_naming_them():
    with pytest.raises(ConfigError, match="learning_rate"):
        TrainConfig.from_dict({"data_dir": "/data", "learning_rate": 0.1})


def test_defaults_validate_and_leave_the_network_to_the_run():
    from training.backbones import AUTO_BACKBONE

    assert TrainConfig(data_dir="/data").validate().backbone == AUTO_BACKBONE == "auto"


@pytest.mark.parametrize(
    "change, fragment",
    [
        ({"head_epochs": -1}, "head_epochs"),
        ({"schedule": "linear"}, "schedule"),
        ({"optimizer": "lbfgs"}, "valid optimizers are"),
        ({"val_fraction": 1.5}, "val_fraction"),
        ({"head_lr": 0}, "head_lr"),
        ({"augmentation": "heavy"}, "augmentation"),
        ({"head_solver": "epochs", "head_epochs": 0, "finetune_epochs": 0}, "At least one"),
        ({"head_solver": "newton"}, "head_solver"),
        ({"budget_minutes": -1}, "budget_minutes"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "test_fraction"),
        ({"unfreeze_blocks": -3}, "unfreeze_blocks"),
        ({"device": "tpu"}, "device"),
        ({"mixup": -0.2}, "mixup"),
    ],
)
def test_validate_raises_one_clear_sentence(change, fragment):
    with pytest.raises(ConfigError, match=fragment) as info:
        TrainConfig(data_dir="/data", **change).validate()
    assert "\n" not in str(info.value)


def test_each_lecture_optimizer_has_its_own_tuned_recipe_rates():
    from training.optim import OPTIMIZERS

    defaults = TrainConfig(data_dir=".")
    assert recipe_lrs("adamw") == (defaults.head_lr, defaults.finetune_lr)
    for name in ("sgd", "momentum", "adagrad", "rmsprop", "adam"):
        assert recipe_lrs(name) == OPTIMIZERS[name].recipe_lrs  # bench/optimizers.py chose them
    assert recipe_lrs("sgd")[0] > recipe_lrs("momentum")[0] > recipe_lrs("adam")[0]
    with pytest.raises(ConfigError):
        recipe_lrs("nope")
