"""What a store holds, at a glance (``lossatlas inspect STORE --summary``), also while a run writes it.

Inspection reads attributes as they are, like ``Store.tree``: it must describe a store this
lossatlas cannot fully read (opened with ``validate=False``) and one another process is writing,
where a group may exist before its attributes or its ``complete`` flag. Such a node is counted as
unfinished, never an error. ``study.read_while_written`` opens the store for it.
"""
from __future__ import annotations

import json
import os
from collections import Counter

import h5py
import numpy as np


def overview(file: h5py.File, path) -> dict:
    """The store described as plain values: format, size, subjects (parameters, device and dtype,
    minima, results per analyzer, samples) and benchmarks."""
    root = file.attrs
    info = {"path": str(path), "size_bytes": _size(path), "schema": _text(root.get("schema")),
            "schema_version": _plain(root.get("schema_version")),
            "lossatlas_version": _text(root.get("lossatlas_version")), "created": _text(root.get("created")),
            "subjects": [], "benchmarks": []}
    subjects = _group(file, "subjects")
    for name in sorted(subjects) if subjects is not None else []:
        node = _group(subjects, name)
        if node is not None:
            info["subjects"].append(_subject(name, node))
    benchmarks = _group(file, "benchmarks")
    for name in sorted(benchmarks) if benchmarks is not None else []:
        node = _group(benchmarks, name)
        if node is not None:
            info["benchmarks"].append(_benchmark(name, node))
    return info


def summary(info: dict) -> str:
    """``overview`` as a few readable lines."""
    size = "in memory" if info["size_bytes"] is None else _bytes(info["size_bytes"])
    lines = [f"{info['path']}  ({size}; {info['schema'] or 'no schema'} store, schema version "
             f"{info['schema_version']}, written by lossatlas {info['lossatlas_version'] or '?'}, created "
             f"{info['created'] or '?'})", f"subjects ({len(info['subjects'])}):"]
    for subject in info["subjects"]:
        runtime = ", ".join(subject["runtime"]) or "device not recorded"
        what = f"{subject['dim']:,} parameters" if isinstance(subject["dim"], int) else "parameters unknown"
        lines.append(f"  {subject['name']}: {subject['kind']}, {what} ({runtime})")
        minima = subject["minima"]
        if minima:
            lines.append(f"    minima ({len(minima)}): {_minima_text(minima)}")
        elif subject["kind"] != "imported surface":
            lines.append("    minima: none")
        if subject["samples"]:
            lines.append("    samples: " + ", ".join(f"{kind} {count}" for kind, count in subject["samples"].items()))
        for method, found in subject["results"].items():
            lines.append(f"    {method}: {_results_text(found)}")
        if not subject["results"]:
            lines.append("    results: none")
    lines.append(f"benchmarks ({len(info['benchmarks'])}):" if info["benchmarks"] else "benchmarks: none")
    for bench in info["benchmarks"]:
        lines.append(f"  {bench['name']}: {bench['status']}")
    return "\n".join(lines)


# -- the parts -------------------------------------------------------------------------------------
def _subject(name: str, node: h5py.Group) -> dict:
    config = _json(node.attrs.get("config")) or {}
    dim = node.attrs.get("dim")
    kind = "imported surface" if config.get("kind") == "surface" else \
        config.get("problem") or config.get("model") or config.get("kind") or "subject"
    runtimes: Counter = Counter()
    minima = []
    group = _group(node, "minima")
    for index in sorted(group) if group is not None else []:
        part = _group(group, index)
        if part is None:
            continue
        recipe = _json(part.attrs.get("recipe")) or {}
        seed = part.attrs.get("seed")
        checkpoint = recipe.get("source") == "checkpoint"
        minima.append({"index": int(index) if index.isdigit() else index, "complete": _complete(part),
                       "seed": None if checkpoint or seed is None else int(seed)})
        runtimes[_runtime(part)] += 1
    results = {}
    found = _group(node, "results")
    for method in sorted(found) if found is not None else []:
        keys = _group(found, method)
        if keys is not None:
            results[method] = _method_results(keys, runtimes)
    samples = {}
    group = _group(node, "samples")
    for sample in sorted(group) if group is not None else []:
        inside = _group(group, sample)
        if inside is not None and len(inside):
            samples[sample] = len(inside)
    return {"name": name, "kind": str(kind), "dim": int(dim) if dim is not None else None,
            "runtime": [r for r in runtimes if r], "minima": minima, "results": results, "samples": samples}


def _method_results(keys: h5py.Group, runtimes: Counter) -> dict:
    """Counts of one analyzer's results: finished ones at each minimum, at theta0, per subject;
    unfinished ones; how many parameter sets (the minimum aside)."""
    at_minima, elsewhere, unfinished, settings = [], Counter(), 0, set()
    for key in sorted(keys):
        node = _group(keys, key)
        if node is None:
            continue
        if not _complete(node):
            unfinished += 1
            continue
        params = _json(node.attrs.get("params")) or {}
        scope = (_json(node.attrs.get("analyzer")) or {}).get("scope", "minimum")
        settings.add(json.dumps({k: v for k, v in params.items() if k != "minimum"}, sort_keys=True))
        runtimes[_runtime(node)] += 1
        if scope == "subject":
            elsewhere["subject"] += 1
        elif params.get("at", "minimum") == "minimum" and "minimum" in params:
            at_minima.append(int(params["minimum"]))
        else:
            elsewhere[str(params.get("at", "?"))] += 1
    return {"minima": at_minima, "other": dict(elsewhere), "unfinished": unfinished, "settings": len(settings)}


def _minima_text(minima: list[dict]) -> str:
    """Which minima, from which seeds: "0-5 (seed = index)" where they match, else each one."""
    done = [m for m in minima if m["complete"]]
    unfinished = [m["index"] for m in minima if not m["complete"]]
    if done and all(m["seed"] == m["index"] for m in done):
        text = f"{_ranges([m['index'] for m in done])} (seed = index)"
    else:
        text = ", ".join(f"{m['index']} " + (f"(seed {m['seed']})" if m["seed"] is not None else "(checkpoint)")
                         for m in done)
    if unfinished:
        text += ("; " if text else "") + f"{', '.join(map(str, unfinished))} unfinished (being written, or interrupted)"
    return text


def _results_text(found: dict) -> str:
    done = len(found["minima"]) + sum(found["other"].values())
    parts = []
    if found["minima"]:
        counts = Counter(found["minima"])
        each = set(counts.values())
        parts.append(f"minima {_ranges(sorted(counts))}" + ("" if each == {1} else
                                                               f" ({'/'.join(map(str, sorted(each)))} each)"))
    for where, count in found["other"].items():
        parts.append("per subject" if where == "subject" else f"{count} at {where}")
    text = f"{done} result{'s' if done != 1 else ''}" + (f": {'; '.join(parts)}" if parts else "")
    if found["settings"] > 1:
        text += f"; {found['settings']} parameter sets"
    if found["unfinished"]:
        text += f"; {found['unfinished']} unfinished (being written, or interrupted)"
    return text


def _benchmark(name: str, node: h5py.Group) -> dict:
    """Whether every planned variant has runs with every method's results."""
    record = _json(node.attrs.get("record"))
    if not isinstance(record, dict):
        return {"name": name, "complete": False, "status": "record not readable (being written?)"}
    subjects, runs = record.get("subjects") or [], record.get("runs") or []
    keys, methods = list(record.get("variants") or {}), list(record.get("methods") or {})
    planned = {json.dumps({k: s.get(k) for k in keys}, sort_keys=True) for s in subjects} or {"{}"}
    done = {json.dumps({k: r.get("variant", {}).get(k) for k in keys}, sort_keys=True) for r in runs}
    partial = sum(1 for r in runs if set(methods) - set(r.get("results") or {}))
    missing = len(planned - done)
    complete = bool(runs) and not missing and not partial
    status = "complete" if complete else "incomplete"
    status += (f" ({len(runs)} run(s) of {len(planned)} variant(s) x {len(record.get('seeds') or [])} seed(s); "
               f"methods: {', '.join(methods) or 'none'}")
    if missing:
        status += f"; {missing} variant(s) without results"
    if partial:
        status += f"; {partial} run(s) missing a method's result"
    return {"name": name, "complete": complete, "status": status + ")"}


# -- tolerant reads --------------------------------------------------------------------------------
def _group(parent: h5py.Group, name: str) -> h5py.Group | None:
    """``parent[name]`` where it is a group of this file; None for anything else (a link, a
    dataset, a name another process has just created or removed)."""
    try:
        link = parent.get(name, getlink=True)
        if not isinstance(link, h5py.HardLink):
            return None
        node = parent[name]
    except (KeyError, OSError, RuntimeError, ValueError):
        return None
    return node if isinstance(node, h5py.Group) else None


def _complete(node: h5py.Group) -> bool:
    """The ``complete`` flag set (a missing or damaged one reads as unfinished)."""
    value = node.attrs.get("complete")
    return isinstance(value, (bool, int, np.bool_, np.integer)) and bool(value)


def _runtime(node: h5py.Group) -> str:
    runtime = _json(node.attrs.get("runtime")) or {}
    device, dtype = runtime.get("device"), runtime.get("dtype")
    return " on ".join(str(v) for v in (dtype, device) if v)


def _json(value):
    try:
        return json.loads(value) if isinstance(value, (str, bytes)) else None
    except ValueError:
        return None


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else "" if value is None else str(value)


def _plain(value):
    return int(value) if hasattr(value, "__int__") and not isinstance(value, (str, bytes)) else _text(value)


def _size(path) -> int | None:
    try:
        return os.path.getsize(path)
    except (OSError, TypeError):
        return None


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _ranges(values: list[int]) -> str:
    """[0, 1, 2, 5] -> "0-2, 5"."""
    out, start = [], None
    for i, value in enumerate(values):
        if start is None:
            start = value
        if i + 1 == len(values) or values[i + 1] != value + 1:
            out.append(str(start) if start == value else f"{start}-{value}")
            start = None
    return ", ".join(out)
