"""Queue a fine-tuning run from the shell, with the same options (and checks) as /runs/new/.

    manage.py finetune --dataset dogs --optimizer momentum --head-epochs 5 --wait

Exit codes: 0 queued (or, with --wait, succeeded); 1 the run failed or was cancelled;
2 invalid options (one line on stderr).
"""

from __future__ import annotations

import time
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from classifier.datasets import selectors as datasets_selectors
from classifier.models import Dataset, TrainingRun
from classifier.runs import config as runconfig
from classifier.runs import services as run_services
from classifier.runs.forms import CONFIG_FIELDS, RunForm

_TYPES = {"head_epochs": int, "finetune_epochs": int, "budget_minutes": float, "unfreeze_blocks": int, "batch_size": int, "image_size": int,
          "early_stopping_patience": int, "seed": int}


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


class Command(BaseCommand):
    help = "Queue a fine-tuning run on a dataset (the options of the /runs/new/ form); --wait follows it."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--dataset", required=True, help="Dataset id, NAME (newest ready version) or NAME:vN.")
        form = RunForm()
        for name in CONFIG_FIELDS:
            field = form.fields[name]
            choices = [value for value, _label in getattr(field, "choices", [])] or None
            parser.add_argument(
                _option(name),
                dest=name,
                type=_TYPES.get(name, float if name.endswith(("_lr", "_mult", "_decay", "_smoothing", "_dropout")) else str),
                choices=choices,
                default=None,
                help=f"{field.label} (default: {field.initial})",
            )
        parser.add_argument("--promote-when-done", action="store_true", help="Promote when done if better than the active model.")
        parser.add_argument("--user", help="Record this user as the one who started the run.")
        parser.add_argument("--wait", action="store_true", help="Follow the run with a progress bar until it ends.")
        parser.add_argument("--poll", type=float, default=1.0, help="Seconds between progress checks with --wait.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            dataset = datasets_selectors.dataset_get_by_ref(options["dataset"])
        except Dataset.DoesNotExist:
            raise CommandError(f"No dataset {options['dataset']!r}.", returncode=2) from None
        user = None
        if options["user"]:
            user = get_user_model().objects.filter(username=options["user"]).first()
            if user is None:
                raise CommandError(f"No user {options['user']!r}.", returncode=2)
        given = {name: options[name] for name in CONFIG_FIELDS if options.get(name) is not None}
        values = runconfig.default_config(given.get("optimizer") if not {"head_lr", "finetune_lr"} & set(given) else None)
        values.update(given)
        data = {name: "" if values.get(name) is None else str(values[name]) for name in CONFIG_FIELDS}
        data["dataset"] = str(dataset.pk)
        if options["promote_when_done"]:
            data["promote_when_done"] = "on"
        form = RunForm(data)
        if not form.is_valid():
            problems = []
            for field, errors in form.errors.items():
                label = "" if field == "__all__" else (_option(field) + ": ")
                problems.append(label + " ".join(str(e) for e in errors))
            raise CommandError("; ".join(problems), returncode=2)
        try:
            run = run_services.run_create(
                dataset=form.cleaned_data["dataset"], config=form.config, created_by=user,
                promote_when_done=form.cleaned_data["promote_when_done"],
            )
        except (run_services.RunError, runconfig.RunConfigError) as exc:
            raise CommandError(str(exc), returncode=2) from None
        self.stdout.write(f"Run #{run.pk} queued on {dataset} ({run.backbone}, {run.optimizer}).")
        if options["wait"]:
            self._follow(run, poll=max(0.2, options["poll"]))

    def _follow(self, run: TrainingRun, *, poll: float) -> None:
        from tqdm import tqdm

        seen = 0
        bar = tqdm(total=100, unit="%", dynamic_ncols=True, file=self.stderr._out, bar_format="{l_bar}{bar}| {postfix}")
        try:
            while True:
                run.refresh_from_db()
                detail = run.progress_detail or {}
                bar.n = round(run.progress * 100, 1)
                bar.set_description(f"run #{run.pk} {run.status}")
                bar.set_postfix_str(_describe(detail), refresh=False)
                bar.refresh()
                for e in run.epochs.all()[seen:]:
                    bar.write(
                        f"{e.phase:8s} epoch {e.epoch:2d}  train loss {_f(e.train_loss)} acc {_f(e.train_acc)}  "
                        f"val loss {_f(e.val_loss)} acc {_f(e.val_acc)}",
                        file=self.stdout._out,
                    )
                    seen += 1
                if run.is_final:
                    break
                time.sleep(poll)
        except KeyboardInterrupt:
            bar.close()
            self.stdout.write(f"Stopped following; run #{run.pk} goes on ({run.get_absolute_url()}).")
            return
        bar.close()
        if run.status == TrainingRun.Status.SUCCEEDED:
            metrics = (run.result or {}).get("metrics", {})
            kept = metrics.get("kept") or {}
            test = f"test accuracy {metrics['test_acc']:.1%} on {metrics.get('test_images')} photos; " if metrics.get(
                "test_acc") is not None else ""
            gain = metrics.get("finetune_gain_test")
            self.stdout.write(self.style.SUCCESS(
                f"Run #{run.pk} succeeded: {test}validation accuracy {run.best_val_acc:.1%}"
                + (f"; kept: {kept.get('phase')} epoch {kept.get('epoch')}" if kept else "")
                + (f"; fine-tuning gained {gain * 100:+.1f} points over the head alone" if gain is not None else "")
                + (f"; network {run.backbone}, chosen automatically" if run.backbone_auto else "")
                + "."
            ))
            promotion = (run.result or {}).get("promotion")
            if promotion:
                self.stdout.write(promotion["reason"])
            return
        raise CommandError(f"Run #{run.pk} {run.status}: {run.error or 'no reason recorded'}", returncode=1)


def _f(value: float | None) -> str:
    return "   —  " if value is None else f"{value:.4f}"


def _describe(detail: dict) -> str:
    stage = detail.get("stage", "")
    if stage == "train":
        eta = detail.get("eta_seconds")
        eta_text = f" eta {int(eta) // 60}:{int(eta) % 60:02d}" if eta is not None else ""
        return (f"{detail.get('phase')} epoch {detail.get('epoch')}/{detail.get('epochs')} "
                f"batch {detail.get('batch')}/{detail.get('batches')}{eta_text}")
    if stage in ("decode", "features"):
        return f"{stage} {detail.get('done')}/{detail.get('total')}"
    return stage
