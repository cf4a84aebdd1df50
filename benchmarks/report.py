"""The results page (docs/results.md) and the README's headline block, rendered from the records alone: no torch,
no network, nothing measured."""

from __future__ import annotations

import json
import math
from pathlib import Path

from benchmarks.core import SUITES, BenchError, read_records

START, END = "<!-- benchmarks:headline:start -->", "<!-- benchmarks:headline:end -->"
MODELS = ("ddpm-cond", "ldm", "ddpm-cond-fast", "ldm-fast")

# The README's headline figures, declared here only. Each: a label, and sources tried together (the newest
# matching record wins): (suite, case, params the record must have, params it must not have (or falsy),
# {shown name: metric}, format with those names).
HEADLINES = [
    (
        "`ddpm-cond`, 10,000 digits at its defaults (DPM-Solver++ 8 steps, guidance 1.35)",
        [
            (
                "quality",
                "sampling",
                {"model": "ddpm-cond", "n": 10000, "sampler": "dpmpp_2m", "steps": 8, "guidance": 1.35},
                ("guide", "compile"),
                {"fid": "fid", "x": "fid_over_baseline", "acc": "label_accuracy", "ips": "images_per_s"},
                "FID@10000 **{fid:.3f}** ({x:.1f}x the train-vs-test baseline), label accuracy {acc:.2%}, {ips:.0f} digits/s",
            )
        ],
    ),
    (
        "`ldm`, 10,000 digits at its defaults (DPM-Solver++ 20 steps, guidance 2)",
        [
            (
                "quality",
                "sampling",
                {"model": "ldm", "n": 10000, "steps": 20, "guidance": 2.0},
                ("guide", "compile"),
                {"fid": "fid", "acc": "label_accuracy", "ips": "images_per_s"},
                "FID@10000 **{fid:.3f}**, label accuracy {acc:.2%}, {ips:.0f} digits/s",
            )
        ],
    ),
    (
        "`ldm-fast`, 10,000 digits (4 steps, one pass each)",
        [
            (
                "quality",
                "sampling",
                {"model": "ldm-fast", "n": 10000, "steps": 4, "guidance": 2.0},
                ("guide", "compile"),
                {"s": "seconds", "fid": "fid"},
                "**{s:.0f} s** for all 10,000, FID@10000 {fid:.3f}",
            )
        ],
    ),
    *[
        (
            f"the page, one `{m}` digit over HTTP",
            [
                (
                    "serve",
                    "latency",
                    {"model": m},
                    ("busy", "fixed_threads", "steps"),
                    {"ms": "digit_ms", "first": "first_frame_ms"},
                    "**{ms:.0f} ms** (first frame {first:.0f} ms)",
                )
            ],
        )
        for m in ("ddpm-cond", "ldm-fast")
    ],
    (
        "bf16 against fp32, `ddpm-cond` sampling on a CPU with bf16 units",
        [
            (
                "precision",
                "sampling",
                {"model": "ddpm-cond"},
                ("table", "frozen"),
                {"x": "bf16_over_fp32"},
                "**{x:.2f}x** the images/s",
            ),
            (
                "precision",
                "sampling",
                {"model": "ddpm-cond", "variant": "bf16"},
                ("batch",),
                {"x": "over_first"},
                "**{x:.2f}x** the images/s",
            ),
        ],
    ),
]


def variant_key(record: dict) -> tuple:
    return (
        record["suite"],
        record["case"],
        json.dumps(record["params"], sort_keys=True),
        (record.get("machine") or {}).get("kind"),
    )


def current(records: list[dict], show_all: bool = False) -> list[dict]:
    """The newest record per case, parameters and processor kind, leaving out records marked superseded
    (about models no longer packaged); with `show_all`, every record."""
    if show_all:
        return records
    newest: dict[tuple, dict] = {}
    for r in records:  # file order breaks ties: the later line wins
        k = variant_key(r)
        if k not in newest or r.get("date", "") >= newest[k].get("date", ""):
            newest[k] = r
    return [r for r in newest.values() if not r.get("superseded")]


def fmt(value) -> str:
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    if isinstance(value, list) and value and all(isinstance(v, list) and len(v) == 2 for v in value):
        return ", ".join(f"{fmt(a)}→{fmt(b)}" for a, b in value)  # a curve's (x, y) points, e.g. images→FID
    if isinstance(value, list):
        return ", ".join(map(fmt, value))
    text = str(value)
    return text[:12] + "…" if len(text) == 64 and all(c in "0123456789abcdef" for c in text) else text


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def machine_text(m: dict) -> str:
    parts = [f"{m.get('processor', '?')} ({m.get('kind', '?')})"]
    if m.get("threads"):
        parts.append(f"{m['threads']} threads")
    if m.get("gpu") and m.get("kind") != "cuda":
        parts.append(m["gpu"])
    if m.get("torch"):
        parts.append(f"torch {m['torch']}")
    parts += [f"{k}={v}" for k, v in (m.get("env") or {}).items()]
    return ", ".join(parts)


def table(records: list[dict]) -> list[str]:
    lines = ["| case | parameters | figures | machine | date, revision |", "|---|---|---|---|---|"]
    for r in sorted(records, key=lambda r: (r["case"], json.dumps(r["params"], sort_keys=True))):
        params = ", ".join(f"{k}={fmt(v)}" for k, v in r["params"].items() if v not in ("", None, ()))
        figures = "; ".join(f"{k} {fmt(v)}" for k, v in r["metrics"].items())
        if r.get("notes") and len(r["notes"]) <= 160:
            figures += f" ({r['notes']})"
        git = r.get("git") or {}
        rev = f"{git.get('revision', '')}{' (dirty)' if git.get('dirty') else ''}"
        lines.append(
            f"| {r['case']} | {cell(params)} | {cell(figures)} | {cell(machine_text(r.get('machine') or {}))}"
            f" | {r.get('date', '')[:10]} {rev} |"
        )
    return lines


def page(records: list[dict], show_all: bool) -> str:
    shown = current(records, show_all)
    lines = [
        "# Benchmark results",
        "",
        "Generated by `python -m benchmarks report` from `benchmarks/results/<suite>.jsonl`; do not edit by hand. "
        + (
            "Every record, history included."
            if show_all
            else "The newest record per case, parameters and processor kind; older and superseded records (about "
            "models no longer packaged) stay in the files, `report --all` shows them."
        )
        + " Each record also holds its command, the full machine (ISA flags, cores, OpenMP environment, load) "
        "and notes; `python -m benchmarks list` says what each case measures.",
        "",
    ]
    for suite in SUITES:
        mine = [r for r in shown if r["suite"] == suite]
        if mine:
            lines += [f"## {suite}", "", *table(mine), ""]
    return "\n".join(lines)


def headline_lines(records: list[dict]) -> list[str]:
    shown = current(records)
    lines = []
    for label, sources in HEADLINES:
        found = []
        for suite, case, want, absent, names, template in sources:
            for r in shown:
                p = r["params"]
                if (
                    (r["suite"], r["case"]) == (suite, case)
                    and all(p.get(k) == v for k, v in want.items())
                    and not any(p.get(k) for k in absent)
                    and all(m in r["metrics"] for m in names.values())
                ):
                    found.append((r.get("date", ""), r, names, template))
        if found:
            _, r, names, template = max(found, key=lambda f: f[0])
            values = template.format(**{k: r["metrics"][m] for k, m in names.items()})
            lines.append(
                f"- {label}: {values} ({machine_text(r['machine']).split(', torch')[0]}; {r.get('date', '')[:10]})"
            )
    return lines


def replace_block(text: str, block: str) -> str | None:
    """`text` with what lies between the headline markers replaced by `block`; None when a marker is missing."""
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        return None
    return text[: start + len(START)] + "\n" + block + "\n" + text[end:]


def report(results: Path, out: Path, readme: Path, show_all: bool = False) -> str:
    """Write the results page and the README block; returns what was done, in a sentence or two."""
    records = list(read_records(results))
    if not records:
        raise BenchError(f"There are no records under {results}; run a suite first (python -m benchmarks run ...).")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page(records, show_all) + "\n")
    done = f"wrote {out} ({len(current(records, show_all))} of {len(records)} records shown)"
    block = "\n".join(headline_lines(records))
    text = readme.read_text() if readme.exists() else ""
    new = replace_block(text, block)
    if new is None:
        return done + f"; {readme.name} has no {START} ... {END} markers, so its headline block was not written."
    if new != text:
        readme.write_text(new)
    return done + f"; the headline block of {readme} is up to date"
