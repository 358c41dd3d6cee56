"""Health of the dependencies one web process relies on: database, broker, worker, active model;
and the /api/health endpoint that reports it: a database query, a Redis ping and a Redis read
(the workers' heartbeats), never a Celery broadcast.

Shared (web/); imports versions.selectors and Django/DRF.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import redis
from django.conf import settings
from django.db import connection
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.decorators import api_view, permission_classes
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response

from classifier.storage import remote
from classifier.versions import selectors as versions_selectors
from classifier.web import heartbeat
from training.objectstore import StorageError


@dataclass
class Check:
    status: str  # "ok" | "down" | "none"
    detail: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def failing(self) -> bool:
        return self.status == "down"

    def as_dict(self) -> dict:
        return {"status": self.status, "detail": self.detail, **self.extra}


def check_database() -> Check:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # any driver error means "down"
        return Check("down", f"{type(exc).__name__}: {exc}".strip())
    return Check("ok", connection.vendor)


def check_broker() -> Check:
    timeout = settings.BREEDLAB_HEALTH_TIMEOUT
    try:
        client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=timeout, socket_connect_timeout=timeout)
        client.ping()
    except redis.RedisError as exc:
        return Check("down", f"Redis does not answer: {exc}")
    return Check("ok", "redis")


def check_worker() -> Check:
    """A worker consumes the ``training`` queue: read from the heartbeats workers write (no broadcast)."""
    try:
        workers = heartbeat.fresh_workers()
    except redis.RedisError as exc:
        return Check("down", f"cannot read worker heartbeats: {exc}")
    training = sorted(name for name, queues in workers.items() if "training" in queues)
    maintenance = sorted(name for name, queues in workers.items() if "maintenance" in queues)
    extra = {"workers": sorted(workers), "maintenance_workers": maintenance}
    if not training:
        return Check("down", "no worker consuming the 'training' queue has sent a heartbeat lately", extra)
    return Check("ok", f"{len(training)} worker(s)", {**extra, "workers": training})


def check_model() -> Check:
    version = versions_selectors.model_get_active()
    if version is None:
        return Check("none", "no fine-tuned model is active yet")
    if version.kind == version.Kind.BUILTIN:  # pretrained weights, no run folder to look for
        return Check("ok", version.name, {"id": version.pk, "backbone": version.backbone, "builtin": True})
    try:
        folder = remote.run_local(version.path)  # with object storage: this host's copy, downloaded once
    except StorageError as exc:
        return Check("down", f"the active model's files cannot be downloaded: {exc}", {"id": version.pk})
    if not (folder / "model.safetensors").is_file():
        return Check("down", f"the active model's files are missing from {folder}", {"id": version.pk})
    return Check("ok", version.name, {"id": version.pk, "backbone": version.backbone})


# What this web process needs to answer requests: without them it is out of the load balancer (503).
# A missing training worker only delays training runs: the site stays up ("degraded", 200).
ESSENTIAL = ("database", "broker", "model")


def health_report() -> tuple[bool, dict]:
    checks = {
        "database": check_database(),
        "broker": check_broker(),
    }
    checks["worker"] = check_worker() if not checks["broker"].failing else Check("down", "broker is down")
    checks["model"] = check_model() if not checks["database"].failing else Check("down", "database is down")
    healthy = not any(checks[name].failing for name in ESSENTIAL)
    state = "down" if not healthy else ("degraded" if any(c.failing for c in checks.values()) else "ok")
    return healthy, {"status": state, **{name: c.as_dict() for name, c in checks.items()}}


def public_report(report: dict) -> dict:
    """What anyone may read: each check's status, and the database's kind; no hostnames, paths or errors."""
    public = {"status": report["status"]}
    for name, check in report.items():
        if isinstance(check, dict):
            public[name] = {"status": check["status"]}
    if report["database"]["status"] == "ok":
        public["database"]["detail"] = report["database"]["detail"]  # "sqlite" / "postgresql"
    return public


_check = inline_serializer(
    "HealthCheck", fields={"status": serializers.CharField(), "detail": serializers.CharField()}
)


@extend_schema(
    summary="State of the database, the broker, the training worker and the active model",
    description=(
        "200 with status `ok`, or `degraded` when only the training worker is away (the site works, runs wait); "
        "503 `down` when the database, the broker or the active model's files are unavailable. No broadcast: "
        "the worker's state comes from the heartbeat workers write. Details (worker hostnames, paths, errors) "
        "are shown to staff only."
    ),
    responses={
        200: inline_serializer(
            "Health",
            fields={
                "status": serializers.CharField(),
                "database": _check,
                "broker": _check,
                "worker": _check,
                "model": _check,
            },
        ),
        503: OpenApiResponse(description="A dependency is down; the body has the same shape."),
    },
)
@api_view(["GET"])
@permission_classes([AllowAny])
def health(request: Request) -> Response:
    healthy, report = health_report()
    if not (request.user.is_authenticated and request.user.is_staff):
        report = public_report(report)
    response = Response(report, status=status.HTTP_200_OK if healthy else status.HTTP_503_SERVICE_UNAVAILABLE)
    response["Cache-Control"] = "no-store"
    return response
