"""Every page on a phone and in Russian, typed numbers kept, honest cancel and live stages.

- every page at 390 px (English and Russian) has no horizontal scroll; with
  BREEDLAB_SCREENSHOTS_DIR set (``make screenshots``) each page is also saved at 1280 and 390 px
  in both languages into that folder;
- at 390 px the charts are the phone's drawings, shown at close to the size they were drawn at
  (their letters stay readable);
- the Russian pages a visitor or staff member reaches have no English text nodes (besides the
  allowed names; breeds are named in Russian, so their folder names are not allowed);
- the run form keeps the numbers as typed; a cancelled run reads "Cancelled";
- the live page's stage label follows the reporter's events through reading, caching, the head,
  fine-tuning and calibration (the events are written by a DbReporter in a separate process).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import expect

from tests.e2e.conftest import ROOT, _api_dataset, log_in

SCREENSHOTS = os.environ.get("BREEDLAB_SCREENSHOTS_DIR")

# Words that stay as they are in Russian: product, model and library names, units, the test's
# own names (user, dataset, breeds as stored folder names).
ALLOWED_LATIN = re.compile(
    r"^(Breedlab|EfficientNet-Lite\d|EfficientNet-B0|ResNet-\d+|MobileNet\S*|ImageNet|CIFAR-\d+|SGD|AdamW?|AdaGrad|"
    r"RMSProp|L-BFGS|int8|fp32|GPU|CPU|F1|Top-5|top-5|JPEG|PNG|ZIP|tar|ImageFolder|EN|RU|API|JSON|px|batch-norm|x0\.5|e2e-staff|journey-dogs\S*|Journey|"
    r"Ctrl|English|"
    r"efficientnet_lite\d|cifar10_resnet20|dogs\S*|run\d+|v\d+)$",
    re.IGNORECASE,
)
TEXT_NODES = """() => {
  const out = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const node = walker.currentNode, parent = node.parentElement;
    if (!parent || parent.closest('script, style, noscript, code, pre, [hidden], svg title')) continue;
    const style = getComputedStyle(parent);
    if (style.display === 'none' || style.visibility === 'hidden') continue;
    const text = node.textContent.trim();
    if (text) out.push(text);
  }
  for (const el of document.querySelectorAll('option, [placeholder], [aria-label], [title], img[alt]')) {
    for (const attr of ['placeholder', 'aria-label', 'title', 'alt']) {
      if (el.getAttribute(attr)) out.push(el.getAttribute(attr));
    }
  }
  return out;
}"""
SCROLL = "() => ({doc: document.documentElement.scrollWidth, view: document.documentElement.clientWidth})"


def english_words(texts: list[str]) -> list[str]:
    found = []
    for text in texts:
        for word in re.findall(r"[A-Za-z][A-Za-z0-9_.\-]*[A-Za-z0-9]", text):
            if len(word) >= 3 and not ALLOWED_LATIN.match(word) and not re.fullmatch(r"[A-Za-z]?\d+\S*|[eE]-?\d+", word):
                found.append(f"{word!r} in {text[:80]!r}")
    return found


def set_language(context, base: str, language: str) -> None:
    context.add_cookies([{"name": "django_language", "value": language, "url": base}])


def every_page(stack, runs: list[int]) -> list[tuple[str, str]]:
    dataset_id = stack.state["dataset_id"]
    return [
        ("classify", "/"),
        ("runs", "/runs/"),
        ("runs-failed", "/runs/?status=failed"),
        ("run", f"/runs/{runs[0]}/"),
        ("run-validation", f"/runs/{runs[0]}/validation/?wrong=1"),
        ("compare", f"/runs/compare/?ids={runs[0]},{runs[1]}"),
        ("models", "/models/"),
        ("datasets", "/datasets/"),
        ("dataset", f"/datasets/{dataset_id}/"),
        ("login", "/admin/login/?next=/"),
    ]


STAFF_PAGES = [("run-new", "/runs/new/"), ("dataset-new", "/datasets/new/"), ("storage", "/storage/")]

# Each chart on a phone: which drawing the browser took, and how many drawn pixels per shown one
# (a 1000-px-wide drawing squeezed into 350 px shows 11-pt letters at 4 px).
CHARTS = """() => {
  const out = [];
  for (const img of document.querySelectorAll('img.curves, figure.chart img')) {
    if (img.offsetParent === null) continue;
    out.push({src: img.currentSrc, scale: img.naturalWidth / img.getBoundingClientRect().width});
  }
  for (const svg of document.querySelectorAll('.chart svg')) {
    if (svg.closest('.chart').offsetParent === null) continue;
    const box = svg.viewBox.baseVal, shown = svg.getBoundingClientRect().width;
    out.push({src: 'inline ' + svg.closest('.chart').className, scale: (box && box.width ? box.width * 4 / 3 : shown) / shown});
  }
  return out;
}"""


def _visit(page, path: str) -> None:
    response = page.goto(path)
    assert response is not None and response.status < 400, f"{path}: {response and response.status}"
    page.wait_for_load_state("networkidle")


def test_every_page_fits_a_phone_in_both_languages(playwright_browser, stack, finished_runs):
    """No page scrolls sideways at 390 px; ``make screenshots`` also saves each one at 1280 and 390 px."""
    pages = every_page(stack, finished_runs)
    widths = (1280, 390) if SCREENSHOTS else (390,)
    overflowing, squeezed = [], []
    for language in ("en", "ru"):
        for width in widths:
            for staff in (False, True):
                context = playwright_browser.new_context(base_url=stack.base, viewport={"width": width, "height": 860})
                context.set_default_timeout(30_000)
                set_language(context, stack.base, language)
                page = context.new_page()
                if staff:
                    log_in(page)
                for name, path in STAFF_PAGES if staff else pages:
                    _visit(page, path)
                    size = page.evaluate(SCROLL)
                    if width == 390 and size["doc"] > size["view"]:
                        overflowing.append(f"{language} {path}: {size['doc']} px wide in a {size['view']} px window")
                    if width == 390:
                        for chart in page.evaluate(CHARTS):
                            if chart["scale"] > 1.6:
                                squeezed.append(f"{language} {path}: {chart['src']} drawn {chart['scale']:.1f}x its shown width")
                    if SCREENSHOTS:
                        folder = Path(SCREENSHOTS)
                        folder.mkdir(parents=True, exist_ok=True)
                        page.screenshot(path=str(folder / f"{name}-{language}-{width}.png"), full_page=True)
                context.close()
    assert not overflowing, "\n".join(overflowing)
    assert not squeezed, "charts too small to read on a phone:\n" + "\n".join(squeezed)


def test_the_russian_pages_a_user_reaches_have_no_english_text(playwright_browser, stack, finished_runs):
    found = {}
    for staff in (False, True):
        context = playwright_browser.new_context(base_url=stack.base, viewport={"width": 1280, "height": 900})
        set_language(context, stack.base, "ru")
        page = context.new_page()
        if staff:
            log_in(page)
        # Staff see every page too, with their own buttons and forms on them.
        for _name, path in every_page(stack, finished_runs)[:-1] + STAFF_PAGES if staff else every_page(stack, finished_runs):
            _visit(page, path)
            words = english_words(page.evaluate(TEXT_NODES))
            if words:
                found[f"{'staff ' if staff else ''}{path}"] = words[:12]
        context.close()
    assert not found, "\n".join(f"{path}: {words}" for path, words in found.items())


def test_the_run_form_keeps_typed_numbers_and_a_cancelled_run_reads_cancelled(page, stack, dataset_archive):
    dataset_id = _api_dataset(stack, dataset_archive)
    log_in(page, next_url=f"/runs/new/?dataset={dataset_id}")
    # The recipe's rates for AdaGrad as a person would type them (never 0.0029999999999999996).
    page.select_option("#id_optimizer", "adagrad")
    rates = [page.input_value("#id_head_lr"), page.input_value("#id_finetune_lr")]
    assert all(len(rate) <= 8 for rate in rates), rates
    page.select_option("#id_optimizer", "momentum")
    page.fill("#id_finetune_lr", "0.003")
    page.fill("#id_head_epochs", "50")  # long enough to still be there when cancelled
    page.get_by_role("button", name="Start the run").click()
    page.wait_for_url(re.compile(r"/runs/\d+/$"))
    run_id = int(re.search(r"/runs/(\d+)/", page.url).group(1))
    status, body = stack.get_json(f"/api/runs/{run_id}")
    assert status == 200 and body["config"]["finetune_lr"] == 0.003, body["config"]
    assert repr(body["config"]["finetune_lr"]) == "0.003"
    expect(page.locator(".config-groups")).to_contain_text("0.003")

    # Cancel asks first; dismissing keeps the run going, accepting cancels it.
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.get_by_role("button", name="Cancel").click()
    assert stack.get_json(f"/api/runs/{run_id}")[1]["cancel_requested"] is False
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Cancel").click()
    deadline = time.monotonic() + 120
    while stack.get_json(f"/api/runs/{run_id}")[1]["status"] != "cancelled":
        assert time.monotonic() < deadline, "the run was not cancelled in 120 s"
        time.sleep(1)
    # The open page reloads itself once its poll sees the run has ended (a second navigation
    # from here would race that reload), so wait for the page the user is looking at.
    expect(page.locator(".cancelled-note")).to_be_visible(timeout=30_000)
    expect(page.locator("#run-live .badge")).to_have_text("Cancelled")
    expect(page.locator(".cancelled-note")).to_contain_text("Cancelled")
    expect(page.locator(".error-box")).to_have_count(0)
    expect(page.locator("main")).not_to_contain_text("Error")


# A DbReporter in its own process walks a run through every stage, a few seconds each.
DRIVE_STAGES = textwrap.dedent("""
    import sys, time, django
    django.setup()
    from classifier.models import TrainingRun
    from classifier.runs.reporter import DbReporter
    run = TrainingRun.objects.get(pk=int(sys.argv[1]))
    pause = float(sys.argv[2])
    reporter = DbReporter(run_id=run.pk, attempt=run.attempts, config=run.config, interval=0.0)
    reporter.start(resumed=False)
    for what in ("decode", "features"):
        for done in (10, 20):
            reporter.on_progress(what=what, done=done, total=40)
            time.sleep(pause / 2)
    for phase in ("head", "finetune"):
        reporter.on_phase_start(phase=phase, epochs=2, batches_per_epoch=4)
        for batch in (1, 2):
            reporter.on_batch(phase=phase, epoch=1, batch=batch, batches=4, loss=1.0)
            time.sleep(pause / 2)
    TrainingRun.objects.filter(pk=run.pk).update(progress_detail=reporter.stage_detail("calibrate"))
    time.sleep(pause)
    TrainingRun.objects.filter(pk=run.pk).update(status="cancelled", progress_detail={"stage": "cancelled"})
""")


def test_the_live_page_shows_each_stage_in_turn(page, stack, dataset_archive):
    dataset_id = _api_dataset(stack, dataset_archive)
    created = stack.manage(
        "shell", "-c",
        "from classifier.models import TrainingRun, Dataset; from classifier.runs.config import default_config; "
        f"r = TrainingRun.objects.create(dataset=Dataset.objects.get(pk={dataset_id}), config=default_config(), "
        "status='running', attempts=1, worker='e2e-driver', progress_detail={'stage': 'starting'}); print(r.pk)",
    )
    run_id = int(created.strip().splitlines()[-1])
    page.goto(f"/runs/{run_id}/")
    driver = subprocess.Popen([sys.executable, "-c", DRIVE_STAGES, str(run_id), "5"], cwd=ROOT, env=stack.env)
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 90
        while driver.poll() is None and time.monotonic() < deadline:
            active = page.locator("#run-live .stage-active .stage-label")
            try:
                label = active.last.inner_text(timeout=2_000) if active.count() else None
            except PlaywrightError:  # the page reloaded itself as the run ended, between the two looks
                break
            if label and (not seen or seen[-1] != label):
                seen.append(label)
            page.wait_for_timeout(300)
    finally:
        if driver.poll() is None:
            driver.kill()
        driver.wait()
    assert driver.returncode == 0
    assert seen == [
        "Reading the photos", "Passing the photos through the frozen network", "Training the new head",
        "Fine-tuning the network", "Calibrating “not a dog” and “not sure”",
    ], seen
