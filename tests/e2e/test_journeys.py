"""Three journeys through the real site in a real browser (see conftest.py for the stack).

They run in this order so that the later ones reuse the training journey's model and run; each
also runs alone (its fixtures then make what it needs through the JSON API).
"""

from __future__ import annotations

import base64
import re

import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import expect

from tests.e2e.conftest import JOURNEY_BREEDS, JOURNEY_CONFIG, PHOTOS_PER_BREED, held_out, log_in

# Chromium's JavaScript for "the user dropped this file on the drop zone".
DROP_FILE = """([selector, name, mime, b64]) => {
  const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
  const transfer = new DataTransfer();
  transfer.items.add(new File([bytes], name, {type: mime}));
  const zone = document.querySelector(selector);
  for (const type of ["dragenter", "dragover", "drop"]) {
    zone.dispatchEvent(new DragEvent(type, {dataTransfer: transfer, bubbles: true, cancelable: true}));
  }
}"""

LIVE_STATE = """() => {
  const live = document.querySelector('#run-live');
  return {
    marker: window.__journeyMarker || null,
    text: live ? live.innerText : null,
    progress: live && live.querySelector('progress') ? live.querySelector('progress').value : null,
    polling: !!(live && live.getAttribute('hx-get')),
  };
}"""


def wait_for_image(page, selector: str) -> None:
    """Until the first image matching ``selector`` has loaded real pixels (a broken image never does)."""
    page.wait_for_function(
        "s => { const i = document.querySelector(s); return !!i && i.complete && i.naturalWidth > 0; }", arg=selector
    )


def test_staff_upload_a_dataset_start_a_run_watch_it_live_promote_it_and_classify(page, stack, dataset_archive, stanford_dogs_dir):
    # 1. Log in and upload the archive (the page sends it by XHR with a progress bar).
    log_in(page, next_url="/datasets/new/")
    page.fill("#id_name", "journey-dogs")
    page.set_input_files("#id_archive", str(dataset_archive))
    page.get_by_role("button", name="Upload and check").click()
    page.wait_for_url(re.compile(r"/datasets/\d+/$"), timeout=60_000)
    n = len(JOURNEY_BREEDS) * PHOTOS_PER_BREED
    expect(page.locator("body")).to_contain_text(f"{n} photos, {len(JOURNEY_BREEDS)} breeds")
    dataset_id = int(re.search(r"/datasets/(\d+)/", page.url).group(1))
    stack.state["dataset_id"] = dataset_id
    page.shot("dataset")

    # 2. Start a small fine-tuning run from the form.
    page.goto(f"/runs/new/?dataset={dataset_id}")
    expect(page.locator("#id_dataset")).to_have_value(str(dataset_id))
    page.select_option("#id_backbone", JOURNEY_CONFIG["backbone"])
    page.select_option("#id_optimizer", JOURNEY_CONFIG["optimizer"])
    for name in ("head_epochs", "finetune_epochs", "unfreeze_blocks", "batch_size", "early_stopping_patience"):
        page.fill(f"#id_{name}", str(JOURNEY_CONFIG[name]))
    page.shot("run-form")
    page.get_by_role("button", name="Start the run").click()
    page.wait_for_url(re.compile(r"/runs/\d+/$"))
    run_id = int(re.search(r"/runs/(\d+)/", page.url).group(1))
    expect(page.locator(".messages")).to_contain_text(f"Run #{run_id} was created.")

    # 3. Watch it: the live part changes while the page itself stays the same document.
    page.evaluate("window.__journeyMarker = 'never reloaded'")
    seen: list[dict] = []
    for _ in range(600):
        try:
            state = page.evaluate(LIVE_STATE)
        except PlaywrightError as exc:  # the reload happened while we were looking
            if "context was destroyed" not in str(exc):
                raise
            page.wait_for_load_state()
            break
        if state["marker"] is None:  # the run ended: htmx reloaded the page once for the results
            break
        if not seen or (state["text"], state["progress"]) != (seen[-1]["text"], seen[-1]["progress"]):
            seen.append(state)
            if len(seen) == 3:
                page.shot("live")
        page.wait_for_timeout(400)
    texts = [s["text"] for s in seen]
    assert len(seen) >= 2, f"the live section never changed without a reload: {texts}"
    stack.state["live_states_seen"] = len(seen)
    assert any("running" in t.lower() for t in texts), texts
    progress = [s["progress"] for s in seen]
    assert progress == sorted(progress) and progress[-1] > progress[0], f"the progress bar did not move: {progress}"
    assert all(s["polling"] for s in seen[:-1])
    expect(page.locator("#run-live .badge")).to_have_class(re.compile(r"\bbadge-succeeded\b"), timeout=240_000)
    page.shot("finished")
    wait_for_image(page, "img.curves")
    expect(page.locator(".chart.confusion svg")).to_be_visible()
    stack.state.setdefault("finished_runs", []).insert(0, run_id)
    print(f"run #{run_id}: the live section changed {len(seen) - 1} times without a reload; progress seen: "
          f"{[s['progress'] for s in seen]}")

    # 4. Promote it and classify a photo it has never seen.
    # Pages name a version in people's words ("Journey dogs · v1 · run #1"), not "journey-dogs-v1-run1".
    model_name = page.locator(".facts a[href='/models/']").inner_text()
    assert model_name.startswith("Journey dogs · v") and model_name.endswith(f" · run #{run_id}"), model_name
    page.get_by_role("button", name="Promote").click()
    expect(page.locator(".facts").first).to_contain_text(f"{model_name} active")
    page.goto("/")
    expect(page.locator("#active-model-line")).to_contain_text(f"Answers come from model “{model_name}”")
    expect(page.locator("#builtin-model-notice")).to_have_count(0)
    page.set_input_files("#id_image", str(held_out(stanford_dogs_dir, "beagle")))
    page.get_by_role("button", name="Classify").click()
    verdict = page.locator("#result .verdict")
    expect(verdict).to_contain_text("Beagle", timeout=60_000)
    expect(page.locator("#result .bars").first.locator(".bar-value").first).to_contain_text("%")
    page.shot("classified")


def test_a_visitor_picks_a_dog_photo_and_gets_its_breed_and_a_dropped_cat_is_not_a_dog(
    page, stack, active_model, stanford_dogs_dir, not_dogs_dir
):
    page.goto("/")
    # The promoted fine-tuned model answers (not the built-in "Pretrained: 118 dog breeds (ImageNet)"),
    # named in people's words: "Journey dogs · v1 · run #1" for the version journey-dogs-v1-run1.
    version, run = re.fullmatch(r".+-v(\d+)-run(\d+)", active_model["name"]).groups()
    line = page.locator("#active-model-line")
    expect(line).to_contain_text(re.compile(rf"Answers come from model “[^”]+ · v{version} · run #{run}”"))
    expect(line).not_to_contain_text(active_model["name"])
    expect(line).to_contain_text(f"fine-tuned on {len(JOURNEY_BREEDS)} breeds")
    expect(page.locator("#builtin-model-notice")).to_have_count(0)
    assert page.get_by_role("link", name="Staff log in").is_visible()

    # A dog photo, chosen with the file picker: a preview, then the breed with its confidences.
    page.set_input_files("#id_image", str(held_out(stanford_dogs_dir, "pug")))
    expect(page.locator("#preview")).to_be_visible()
    page.get_by_role("button", name="Classify").click()
    expect(page.locator("#result .verdict")).to_contain_text("Pug", timeout=60_000)
    bars = page.locator("#result section").filter(has_text="After: the fine-tuned model").locator(".bars li")
    expect(bars).to_have_count(len(JOURNEY_BREEDS))
    values = [float(v.rstrip("%")) for v in bars.locator(".bar-value").all_inner_texts()]
    assert values == sorted(values, reverse=True) and values[0] > 50 and abs(sum(values) - 100) < 1.5, values
    assert page.url.endswith("/")  # answered in place, by fetch
    page.shot("dog")

    # A cat photo, dropped on the drop zone: "not a dog", and no breed is named.
    cat = sorted((not_dogs_dir / "cats").iterdir())[0]
    page.evaluate(DROP_FILE, ["#dropzone", cat.name, "image/jpeg", base64.b64encode(cat.read_bytes()).decode()])
    expect(page.locator("#dropzone-hint")).to_have_text(cat.name)
    page.get_by_role("button", name="Classify").click()
    expect(page.locator("#result .verdict")).to_have_text("This does not look like a dog.", timeout=60_000)
    expect(page.locator("#result")).not_to_contain_text("After: the fine-tuned model")
    page.shot("cat")


@pytest.mark.usefixtures("stack")
def test_the_history_pages_show_curves_a_clickable_confusion_matrix_and_compare_two_runs(page, finished_runs):
    first, second = finished_runs
    # Dataset photos (the validation gallery's thumbnails) are staff-only by default
    # (BREEDLAB_PUBLIC_DATASET_IMAGES), so review the history as staff.
    log_in(page, next_url="/runs/")

    # The run list: choose two runs and compare them.
    page.goto("/runs/")
    for run_id in (first, second):
        page.get_by_label(f"Compare run #{run_id}").check()
    page.get_by_role("button", name="Compare selected runs").click()
    page.wait_for_url(re.compile(r"/runs/compare/\?"))
    # The side-by-side drawing on a desktop; the stacked one is for phones.
    expect(page.locator(".chart-wide svg")).to_be_visible()
    expect(page.locator(".chart-stacked svg")).to_be_hidden()
    header = page.locator("table.config-table thead").first
    expect(header).to_contain_text(f"#{first}")
    expect(header).to_contain_text(f"#{second}")
    # The settings in people's words, grouped; a row's label is the header's first text (its help follows).
    labels = "ths => ths.map(th => th.firstChild.textContent.trim())"
    groups = page.locator(".config-groups section.config-group")
    model_group = groups.filter(has=page.locator("h3", has_text="Model"))
    expect(model_group).to_have_count(1)
    changed = model_group.locator(":scope > .table-wrap table.config-table tbody tr th")
    assert "Pretrained network" in changed.evaluate_all(labels), changed.evaluate_all(labels)
    expect(model_group.locator("thead")).to_contain_text(f"#{first}")
    # Both runs set their own epochs, so that row differs (whichever runs these are).
    differing = page.locator(".config-groups tr.differs th").evaluate_all(labels)
    assert "Fine-tuning" in differing, differing
    # Settings every run leaves at their defaults are folded behind "more", closed until asked.
    seed = page.locator(".config-groups details.more tr th").filter(has_text="Random seed")
    expect(seed).to_have_count(1)
    expect(seed).to_be_hidden()
    more = page.locator(".config-groups details.more").filter(has=page.locator("tr th", has_text="Random seed"))
    expect(more.locator("summary")).to_contain_text(re.compile(r"\d+ more settings? at (its|their) defaults?"))
    more.locator("summary").click()
    expect(seed).to_be_visible()
    page.shot("compare")

    # One run: loss/accuracy curves as an image and a confusion matrix whose cells open their photos.
    page.goto(f"/runs/{first}/")
    wait_for_image(page, "img.curves")
    assert page.locator("#run-live table tbody tr").count() >= 2  # one row per epoch
    cells = page.locator(".chart.confusion svg a")
    assert cells.count() >= len(JOURNEY_BREEDS)
    page.shot("run")
    href = cells.first.get_attribute("href") or cells.first.get_attribute("xlink:href")
    assert href and "/validation/" in href, href
    cells.first.scroll_into_view_if_needed()
    box = cells.first.bounding_box()  # click the middle of the cell, where its count is written, as a user would
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_url(re.compile(rf"/runs/{first}/validation/\?"))
    expect(page.locator("main .lead")).to_contain_text("True class")
    thumbs = page.locator("main .gallery img")
    expect(thumbs.first).to_be_visible()
    wait_for_image(page, "main .gallery img")
    page.shot("cell")
