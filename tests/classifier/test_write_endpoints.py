"""Every URL that accepts POST, found by walking the URL resolver, against hostile requests.

``test_every_url_that_accepts_post_is_in_the_table`` POSTs to every pattern of the project (web,
API, admin, i18n) and fails for any that does not answer 405 and has no entry in WRITES: a new
write endpoint needs a row here before the suite passes again. Each entry is then checked:

- anonymous visitors: staff pages -> 302 to the login page, the API -> 401/403 with {"error"};
- signed-in users who are not staff -> 403 (the admin sends them to its login page);
- a signed-in staff session without a CSRF token -> 403;
- an oversized body (over DATA_UPLOAD_MAX_MEMORY_SIZE, or over the endpoint's upload cap) -> 413/400;

and nothing in the database changed. The public endpoints (classify a photo, correct an answer,
choose a language, log in) are open to anonymous visitors by design, but the form path still
needs its CSRF token; the JSON predict endpoint without a session needs none (no cookie to ride).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.urls.resolvers import RegexPattern, RoutePattern

from classifier.models import Dataset, EpochMetric, Feedback, ModelVersion, Prediction, TrainingRun

pytestmark = pytest.mark.django_db

LIMIT = 4096  # the request-size cap the tests set (DATA_UPLOAD_MAX_MEMORY_SIZE and the upload caps)


@dataclass(frozen=True)
class Write:
    kind: str  # "staff-page" | "staff-api" | "public-form" | "public-api" | "admin" | "login"
    body: str = "form"  # how its oversized request is made: "form" | "json" | "image" | "archive"


WRITES: dict[str, Write] = {
    # Staff-only pages (form posts).
    "classifier:run_new": Write("staff-page"),
    "classifier:run_cancel": Write("staff-page"),
    "classifier:run_rerun": Write("staff-page"),
    "classifier:run_resume": Write("staff-page"),
    "classifier:run_promote": Write("staff-page"),
    "classifier:model_promote": Write("staff-page"),
    "classifier:model_rollback": Write("staff-page"),
    "classifier:dataset_create": Write("staff-page", body="archive"),
    "classifier:dataset_merge": Write("staff-page"),
    "classifier:dataset_delete": Write("staff-page"),
    "classifier:model_import": Write("staff-page", body="archive"),
    "classifier:storage_delete": Write("staff-page"),
    "classifier:storage_restore": Write("staff-page"),
    # Staff-only JSON API.
    "api:dataset_list": Write("staff-api", body="archive"),
    "api:run_list": Write("staff-api", body="json"),
    "api:run_cancel": Write("staff-api", body="json"),
    "api:model_promote": Write("staff-api", body="json"),
    "api:model_rollback": Write("staff-api", body="json"),
    "api:model_import": Write("staff-api", body="archive"),
    "api:storage_restore": Write("staff-api", body="json"),
    # Open to everybody by design.
    "classifier:home": Write("public-form", body="image"),
    "classifier:prediction_feedback": Write("public-form"),
    "set_language": Write("public-form"),
    "api:predict": Write("public-api", body="image"),
    "admin:login": Write("login"),
    "admin:logout": Write("login"),
}
# Django's admin site: every view is staff-only through admin_view (it sends anyone else to its login).
ADMIN_PREFIX = "admin:"
# The admin's catch-all (a redirect to its login or a 404 for any other admin/... path).
CATCH_ALL = {"admin/(?P<url>.*)$"}
SAMPLE = {"int": "1", "path": "beagle/1.jpg", "str": "x", "slug": "x", "uuid": "00000000-0000-0000-0000-000000000000"}


# ---- walking the resolver ------------------------------------------------------------------------
def url_patterns():
    """(name, route text, pattern) for every URL pattern of the project, includes followed."""
    found = []

    def walk(resolver: URLResolver, prefix: str, namespace: str) -> None:
        for item in resolver.url_patterns:
            if isinstance(item, URLResolver):
                ns = f"{namespace}{item.namespace}:" if item.namespace else namespace
                walk(item, prefix + str(item.pattern), ns)
            elif isinstance(item, URLPattern):
                name = f"{namespace}{item.name}" if item.name else None
                found.append((name, prefix + str(item.pattern), item.pattern))

    walk(get_resolver(), "", "")
    return found


def kwargs_for(route: str, pattern, objects: dict) -> dict:
    """Sample arguments: real ids for pk, by the URL's first segment; fixed strings otherwise."""
    if isinstance(pattern, RoutePattern):
        names = {name: type(conv).__name__.replace("Converter", "").lower() for name, conv in pattern.converters.items()}
    else:
        names = {name: "str" for name in re.compile(pattern.regex.pattern).groupindex}
    values = {}
    for name, conv in names.items():
        if name == "pk":
            segment = route.replace("api/", "").split("/", 1)[0]
            values[name] = objects[segment].pk
        elif name == "app_label":
            values[name] = "classifier"
        elif name in ("object_id", "content_type_id"):
            values[name] = "1"
        else:
            values[name] = SAMPLE.get(conv, "x")
    return values


@pytest.fixture
def objects(make_dataset, settings, staff_user):
    """One of everything a write endpoint can act on, with the files they look for."""
    dataset = make_dataset(name="pets", split={"train": ["beagle/1.jpg"], "val": ["pug/2.jpg"]})
    run = TrainingRun.objects.create(dataset=dataset, config={"backbone": "cifar10_resnet20", "optimizer": "adam"},
                                     out_dir="run-x")
    folder = Path(settings.RUNS_ROOT) / "v1"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"w")
    (folder / "meta.json").write_text("{}")
    version = ModelVersion.objects.create(run=run, name="v1", backbone="cifar10_resnet20", path="v1",
                                          class_names=["beagle", "pug"])
    prediction = Prediction.objects.create(top_label="beagle", is_dog=True,
                                           result={"class_names": ["beagle", "pug"]})
    return {"runs": run, "models": version, "datasets": dataset, "predictions": prediction, "storage": run}


def concrete_urls(objects) -> dict[str, str]:
    """name -> URL with sample arguments; unnamed patterns get "<unnamed route>" (admin's under "admin:")."""
    urls = {}
    for name, route, pattern in url_patterns():
        if isinstance(pattern, RegexPattern) and route in CATCH_ALL:
            continue
        if name is None:
            assert isinstance(pattern, RoutePattern), f"unnamed regex URL pattern {route!r}: name it"
            name = f"{ADMIN_PREFIX if route.startswith('admin/') else ''}<unnamed {route}>"
            path = route
            for key, value in kwargs_for(route, pattern, objects).items():
                path = re.sub(rf"<(\w+:)?{key}>", str(value), path)
            urls[name] = "/" + path
            continue
        urls[name] = reverse(name, kwargs=kwargs_for(route, pattern, objects) or None)
    return urls


def snapshot() -> tuple:
    """What a refused request must leave untouched."""
    return (
        list(TrainingRun.objects.order_by("pk").values_list("pk", "status", "cancel_requested")),
        list(ModelVersion.objects.order_by("pk").values_list("pk", "is_active")),
        list(Dataset.objects.order_by("pk").values_list("pk", "status", "name", "version")),
        Prediction.objects.count(), Feedback.objects.count(), EpochMetric.objects.count(),
        list(get_user_model().objects.order_by("pk").values_list("pk", "username", "is_staff")),
    )


def write_of(name: str) -> Write | None:
    if name in WRITES:
        return WRITES[name]
    if name.startswith(ADMIN_PREFIX):
        return Write("admin")
    return None


# ---- the table is complete -----------------------------------------------------------------------
def test_every_url_that_accepts_post_is_in_the_table(objects, staff_user, enqueued):
    accepting, stale = [], []
    for name, url in concrete_urls(objects).items():
        client = Client()  # a fresh staff session each time (one of them logs out)
        client.force_login(staff_user)
        status = client.post(url, {}).status_code
        if status != 405 and write_of(name) is None:
            accepting.append(f"{name} ({url}) answered POST with {status}")
        if status == 405 and name in WRITES:
            stale.append(f"{name} ({url}) refuses POST now; drop its row")
    assert not accepting, "write endpoints without a row in WRITES:\n" + "\n".join(accepting)
    assert not stale, "\n".join(stale)
    assert sum(1 for name in concrete_urls(objects) if name.startswith(ADMIN_PREFIX)) > 20  # the walk sees the admin


def _entries():
    return sorted(WRITES)


def _admin_post_names():
    """Admin URL names whose view takes POST (add, change, delete, password forms ...)."""
    return sorted(n for n, _r, _p in url_patterns() if n and n.startswith(ADMIN_PREFIX) and n not in WRITES
                  and re.search(r"_(add|change|delete|password_change|password)$|password_change$", n))


# ---- anonymous visitors ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", [n for n in _entries() if WRITES[n].kind.startswith("staff")] + _admin_post_names())
def test_anonymous_visitors_cannot_write(name, objects, enqueued):
    url = concrete_urls(objects)[name]
    before = snapshot()
    kind = write_of(name).kind
    client = Client()
    if kind == "staff-api":
        response = client.post(url, {}, content_type="application/json")
        assert response.status_code in (401, 403), (name, response.status_code)
        assert "error" in response.json()
    else:
        response = client.post(url, {})
        assert response.status_code == 302 and response["Location"].startswith("/admin/login/"), (name, response.status_code)
    assert snapshot() == before, name


# ---- signed in, not staff --------------------------------------------------------------------------
@pytest.mark.parametrize("name", [n for n in _entries() if WRITES[n].kind.startswith("staff")] + _admin_post_names())
def test_signed_in_users_who_are_not_staff_cannot_write(name, objects, plain_user, enqueued):
    url = concrete_urls(objects)[name]
    before = snapshot()
    client = Client()
    client.force_login(plain_user)
    kind = write_of(name).kind
    if kind == "staff-api":
        response = client.post(url, {}, content_type="application/json")
        assert response.status_code == 403 and "error" in response.json(), (name, response.status_code)
    elif kind == "admin":
        response = client.post(url, {})
        assert response.status_code == 302 and response["Location"].startswith("/admin/login/"), (name, response.status_code)
    else:
        assert client.post(url, {}).status_code == 403, name
    assert snapshot() == before, name


# ---- no CSRF token ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", _entries() + _admin_post_names())
def test_a_signed_in_session_without_a_csrf_token_is_refused(name, objects, staff_user, plain_user, enqueued):
    url = concrete_urls(objects)[name]
    before = snapshot()
    client = Client(enforce_csrf_checks=True)
    client.force_login(plain_user if write_of(name).kind.startswith("public") else staff_user)
    if write_of(name).kind.endswith("api"):
        response = client.post(url, json.dumps({}), content_type="application/json")
        assert response.status_code == 403 and "CSRF" in response.json()["error"], (name, response.status_code)
    else:
        response = client.post(url, {"next": "/"})
        assert response.status_code == 403, (name, response.status_code)
    assert snapshot() == before, name


@pytest.mark.parametrize("name", [n for n in _entries() if WRITES[n].kind in ("public-form", "login")])
def test_the_public_forms_need_a_csrf_token_from_anonymous_visitors_too(name, objects, enqueued):
    url = concrete_urls(objects)[name]
    before = snapshot()
    response = Client(enforce_csrf_checks=True).post(url, {"language": "ru", "next": "/"})
    assert response.status_code == 403, (name, response.status_code)
    assert snapshot() == before


def test_the_json_predict_endpoint_is_open_to_anonymous_clients_without_a_token(objects, enqueued):
    """No session cookie, nothing for CSRF to protect: the answer is about the (missing) photo."""
    response = Client(enforce_csrf_checks=True).post("/api/predict", {})
    assert response.status_code == 400 and "CSRF" not in response.json()["error"]


# ---- oversized bodies ------------------------------------------------------------------------------
def _oversized(kind_body: str, objects: dict):
    """(data, content_type) over LIMIT; apart from their size, the JSON and form bodies are accepted requests."""
    padding = "x" * (2 * LIMIT)
    if kind_body == "json":  # a valid "start a run" request for /api/runs; the other endpoints ignore the fields
        return json.dumps({"dataset": objects["datasets"].pk, "config": {}, "padding": padding}), "application/json"
    if kind_body == "image":
        from django.core.files.uploadedfile import SimpleUploadedFile

        return {"image": SimpleUploadedFile("big.jpg", b"\xff\xd8\xff" + b"\0" * (2 * LIMIT))}, None
    if kind_body == "archive":
        from django.core.files.uploadedfile import SimpleUploadedFile

        return {"name": "huge", "archive": SimpleUploadedFile("big.zip", b"PK\x03\x04" + b"\0" * (2 * LIMIT))}, None
    return {"padding": padding}, "application/x-www-form-urlencoded"


@pytest.mark.parametrize("name", _entries() + _admin_post_names())
def test_an_oversized_body_is_refused_with_413_or_400(name, objects, staff_user, settings, enqueued):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = LIMIT
    settings.BREEDLAB_MAX_IMAGE_BYTES = LIMIT
    settings.BREEDLAB_MAX_ARCHIVE_BYTES = LIMIT
    url = concrete_urls(objects)[name]
    before = snapshot()
    client = Client(enforce_csrf_checks=True)  # a real browser session: cookie + token
    if write_of(name).kind.startswith("staff") or write_of(name).kind == "admin":
        client.force_login(staff_user)
    client.get("/")
    token = client.cookies["csrftoken"].value
    data, content_type = _oversized(write_of(name).body, objects)
    if content_type == "application/x-www-form-urlencoded":
        from urllib.parse import urlencode

        data = urlencode({**data, "csrfmiddlewaretoken": token})
    kwargs = {"content_type": content_type} if content_type else {}
    response = client.post(url, data, HTTP_X_CSRFTOKEN=token, **kwargs)
    assert response.status_code in (400, 413), (name, response.status_code, response.content[:300])
    assert snapshot() == before, name
