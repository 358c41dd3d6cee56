import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.training.conftest import make_image_folder
from training.__main__ import main

REPO = Path(__file__).resolve().parents[2]


def test_finetune_prints_one_summary_line_per_epoch_and_writes_the_run(tmp_path, resnet20_checkpoint, capsys):
    data = make_image_folder(tmp_path / "data", {"red": 6, "blue": 6})
    assert main(_finetune_args(data, tmp_path / "run", resnet20_checkpoint, "--early-stopping", "0")) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out if " epoch " in line and not line.startswith("done:")] == ["head", "finetune"]
    assert out[-1].startswith("done: test top-1") and "kept: " in out[-1] and "fine-tune gain" in out[-1]
    assert (tmp_path / "run" / "model.safetensors").is_file() and (tmp_path / "run" / "test.json").is_file()


def _finetune_args(data, out, weights, *extra):
    return [
        "finetune", "--data", str(data), "--out", str(out), "--backbone", "cifar10_resnet20",
        "--backbone-weights", str(weights), "--head-epochs", "1", "--finetune-epochs", "1",
        "--batch-size", "8", "--workers", "0", "--device", "cpu", "--quiet", "--no-head-init", *extra,
    ]


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error:")]
    assert len(errors) == 1, err
    return errors[0]


@pytest.mark.parametrize(
    "case, fragment",
    [
        ("missing_folder", "does not exist"),
        ("one_class", "at least two class"),
        ("one_image", "at least 2 images"),
        ("unknown_backbone", "Unknown backbone 'nope'"),
        ("unknown_optimizer", "Unknown optimizer 'nope'"),
        ("bad_number", "invalid int value"),
    ],
)
def test_finetune_bad_input_is_one_error_line_and_exit_code_2(case, fragment, tmp_path, resnet20_checkpoint, capsys):
    data = tmp_path / "data"
    extra: list[str] = []
    if case == "one_class":
        make_image_folder(data, {"red": 4})
    elif case == "one_image":
        make_image_folder(data, {"red": 4, "blue": 1})
    elif case != "missing_folder":
        make_image_folder(data, {"red": 4, "blue": 4})
    if case == "unknown_backbone":
        extra = ["--backbone", "nope"]
    if case == "unknown_optimizer":
        extra = ["--optimizer", "nope"]
    if case == "bad_number":
        extra = ["--head-epochs", "many"]
    assert _run(_finetune_args(data, tmp_path / "out", resnet20_checkpoint, *extra)) == 2
    assert fragment in _one_error_line(capsys)


def _run(argv: list[str]) -> int:
    """main() as the shell sees it: argparse errors leave through SystemExit."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, resnet20_checkpoint):
    root = tmp_path_factory.mktemp("cli")
    data = make_image_folder(root / "data", {"red": 10, "green": 10, "blue": 10})
    assert main(_finetune_args(data, root / "run", resnet20_checkpoint, "--json")) == 0
    return data, root / "run"


def test_evaluate_json_reports_top1_top5_n_and_per_class(trained_run, capsys):
    data, run = trained_run
    capsys.readouterr()
    assert main(["evaluate", "--model", str(run), "--data", str(data), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) == {"top1", "top5", "n", "per_class"}
    assert report["n"] == 30 and report["top5"] == 1.0 and 0 <= report["top1"] <= 1
    assert set(report["per_class"]) == {"red", "green", "blue"}
    assert set(report["per_class"]["red"]) >= {"precision", "recall"}


def test_evaluate_on_classes_the_model_does_not_know_is_an_error(trained_run, tmp_path, capsys):
    _, run = trained_run
    other = make_image_folder(tmp_path / "other", {"purple": 2, "red": 2})
    assert main(["evaluate", "--model", str(run), "--data", str(other)]) == 2
    assert "purple" in _one_error_line(capsys)


def test_predict_json_gives_top_k_for_each_image_and_skips_unreadable_files(trained_run, tmp_path, capsys):
    data, run = trained_run
    junk = tmp_path / "junk.jpg"
    junk.write_text("nope")
    images = [str(p) for p in sorted((data / "red").glob("*.png"))[:2]]
    capsys.readouterr()
    assert main(["predict", "--model", str(run), *images, str(junk), "--json", "--top-k", "3"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert [o["image"] for o in out] == images
    assert all(len(o["top"]) == 3 and o["top"][0]["probability"] >= o["top"][1]["probability"] for o in out)
    assert "junk.jpg" in captured.err


def test_predict_with_a_missing_model_directory_is_exit_code_2(tmp_path, capsys):
    assert main(["predict", "--model", str(tmp_path / "none"), str(tmp_path / "x.jpg")]) == 2
    assert "not a finished run" in _one_error_line(capsys)


def test_backbones_command_lists_weight_availability_as_a_subprocess():
    proc = subprocess.run(
        [sys.executable, "-m", "training", "backbones", "--json"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert rows["efficientnet_lite0"]["weights_available"] is True
    assert {"input_size", "mean", "std", "weights_detail"} <= set(rows["resnet18"])
