"""Issue 17's targets in one table, from what bench/serving_latency.py and bench/http_load.py wrote.

Both scripts print this table after writing their JSON (bench/out/serving_latency.json,
bench/out/http_load.json), so whichever ran last shows every target; a target whose
measurement is missing says which command measures it. Each file's time, load average and model
are printed beside it: the targets compare numbers of the same run, so run both in the same
quiet minute, on the same model.

    .venv/bin/python bench/targets.py      # the table again, from the files alone
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "out"
LATENCY = "serving_latency.json"
LOAD = "http_load.json"


def _read(name: str) -> dict[str, Any] | None:
    try:
        data = json.loads((OUT / name).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _row(name: str, value: float | None, op: str, aim: float, note: str = "") -> dict[str, Any]:
    met = None if value is None else bool(value <= aim if op == "<=" else value >= aim)
    return {"target": name, "value": None if value is None else round(value, 4), "aim": f"{op} {aim}", "met": met, "note": note}


def targets(latency: dict[str, Any] | None, load: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Every target of issue 17 with its measured value (None where not measured)."""
    missing_latency = "run bench/serving_latency.py --url ..."
    rows_all = (latency or {}).get("rows") or {}
    key = "threads=1" if "threads=1" in rows_all else next(iter(rows_all), None)
    rows = rows_all.get(key) or {}

    def p50(name: str) -> float | None:
        return (rows.get(name) or {}).get("p50_ms")

    eager, served = p50("eager torch forward"), p50("serving forward")
    precision = (rows.get("serving forward") or {}).get("precision", "?")
    int8 = (latency or {}).get("int8") or {}
    drop = None
    if "accuracy_fp32" in int8 and "accuracy_int8" in int8:
        drop = 100 * (int8["accuracy_fp32"] - int8["accuracy_int8"])
    http, dfwd = p50("HTTP round trip"), p50("decode+forward")
    floor = p50("HTTP floor: POST without a photo (400)")
    http_note = "serving_latency.py was run without --url"
    if http:
        http_note = (f"HTTP {http} ms, decode + forward {dfwd} ms; the endpoint's floor without a photo {floor} ms "
                     f"= {floor / dfwd:.2f} x decode + forward" if floor and dfwd else "")
    load_note = "run bench/http_load.py --url ... --run-dir ..."
    if load and "http_vs_bare" in load:
        bare = load.get("bare_model") or {}
        load_note = f"{(load.get('http') or {}).get('clients')} clients"
        if bare.get("decode_and_forward_batch8_photos_per_s"):
            load_note += (f"; against the bare model with decoding (batch 8, {bare['decode_and_forward_batch8_photos_per_s']}"
                          f" photos/s): {load['http']['photos_per_s'] / bare['decode_and_forward_batch8_photos_per_s']:.2f}")
    out = [
        _row("serving forward / eager PyTorch (p50)", served / eager if served and eager else None, "<=", 0.33,
             f"{precision}, {key}" if served else missing_latency),
        _row("int8 top-1 agreement with fp32", int8.get("top1_agreement"), ">=", 0.995,
             f"{int8.get('held_out_photos')} {int8.get('held_out')} photos; {int8.get('reason', '')}" if int8 else
             "no int8 decision (a run directory and BREEDLAB_INT8 on are needed)"),
        _row("int8 test accuracy drop (points)", drop, "<=", 0.3,
             f"{int8.get('accuracy_fp32')} -> {int8.get('accuracy_int8')}" if drop is not None else ""),
        _row("decode + preprocess, 224 px JPEG (ms, p50)", p50("decode+preprocess, 224 px JPEG"), "<=", 2.0,
             "" if rows else missing_latency),
        _row("decode + preprocess, 12 MP photo (ms, p50)", p50("decode+preprocess, 12 MP photo"), "<=", 15.0,
             "" if rows else missing_latency),
        _row("HTTP p50 / decode + forward p50, one photo", http / dfwd if http and dfwd else None, "<=", 1.25, http_note),
        _row("8 clients: HTTP photos/s / bare forward's best batched photos/s", (load or {}).get("http_vs_bare"), ">=", 0.8,
             load_note),
    ]
    return out


def print_targets() -> list[dict[str, Any]]:
    latency, load = _read(LATENCY), _read(LOAD)
    rows = targets(latency, load)
    print("\n## Issue 17 targets")
    for name, data in ((LATENCY, latency), (LOAD, load)):
        if data is None:
            print(f"- bench/out/{name}: not written yet")
        else:
            load_avg = data.get("load_average") or [None]
            print(f"- bench/out/{name}: {data.get('measured_at', '?')}, load average {load_avg[0]}, model {data.get('run_dir', '?')}")
    print("\n| target | measured | aim | met | note |\n|---|---|---|---|---|")
    for r in rows:
        met = "—" if r["met"] is None else ("yes" if r["met"] else "NO")
        value = "not measured" if r["value"] is None else r["value"]
        print(f"| {r['target']} | {value} | {r['aim']} | {met} | {r['note']} |")
    return rows


if __name__ == "__main__":
    print_targets()
    sys.exit(0)
