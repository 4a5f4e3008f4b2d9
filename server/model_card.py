"""The model card written beside an exported model: what it is, how it was trained, privacy."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from shared_model.tasks import score_rows


def model_card(
    *,
    run_id: str,
    base: str,
    fingerprint: str,
    records: Sequence[dict[str, Any]],
    config: dict[str, Any],
    exported_rounds: Mapping[str, Sequence[int]] | None = None,
) -> str:
    """Markdown card from a run's metrics records and resolved config; ``exported_rounds``
    names the rounds whose global adapters each stage's exported one is the mean of."""
    trained = [r for r in records if r.get("round", 0) > 0 and "failed" not in r]
    rounds = {
        s: max((r["round"] for r in trained if r["stage"] == s), default=0)
        for s in ("align", "instruct")
    }
    sites = sorted({s for r in trained for s in r.get("sites", [])})
    final_eval = next((r["eval"] for r in reversed(records) if r.get("eval")), {})
    lines = [
        "# FedUMIT model",
        "",
        "A UMIT-style medical vision-language model (Qwen2-VL architecture) trained by a",
        "federated consortium with FedUMIT. Images never left the hospitals; only LoRA adapters",
        "and numbers did.",
        "",
        f"- run: `{run_id}`",
        f"- base checkpoint: `{base}`",
        f"- fingerprint (base layout + adapter layout): `{fingerprint}`",
        f"- rounds: align {rounds['align']}, instruct {rounds['instruct']}",
        *exported_line(exported_rounds or {}),
        f"- sites that contributed: {len(sites)} ({', '.join(sites) or 'none'})",
        f"- aggregation: {config.get('aggregation')}, differential privacy: {config.get('dp')}",
        "",
        *privacy_table(trained),
        "",
        *evaluation_table(final_eval),
        "",
        "## Use",
        "",
        "```python",
        "from transformers import AutoProcessor, Qwen2VLForConditionalGeneration",
        "model = Qwen2VLForConditionalGeneration.from_pretrained('THIS_DIRECTORY')",
        "processor = AutoProcessor.from_pretrained('THIS_DIRECTORY')",
        "```",
        "",
        "Research use only; not a medical device.",
        "",
    ]
    return "\n".join(lines)


def exported_line(exported_rounds: Mapping[str, Sequence[int]]) -> list[str]:
    """The card's line on which rounds' adapters were merged (none when nothing is said)."""
    parts = [
        f"{stage} round {found[0]}"
        if len(found) == 1
        else f"{stage} the mean of rounds {', '.join(map(str, found))}"
        for stage, found in sorted(exported_rounds.items())
        if found
    ]
    averaged = any(len(found) > 1 for found in exported_rounds.values())
    note = " (the federated evaluation below scores the last round's)" if averaged else ""
    return [f"- exported adapters: {'; '.join(parts)}{note}"] if parts else []


def privacy_table(records: Sequence[dict[str, Any]]) -> list[str]:
    """The card's privacy section: each site's cumulative epsilon and its delta, as the site
    last reported them (a site's delta is its own policy's)."""
    spent: dict[str, dict[str, float]] = {}
    for record in records:
        for key in ("epsilon", "delta"):
            for site, value in record.get(key, {}).items():
                spent.setdefault(site, {})[key] = value
    lines = ["## Privacy", "", "| site | final epsilon | delta |", "| --- | --- | --- |"]
    for site, reported in sorted(spent.items()):
        epsilon, delta = reported.get("epsilon", math.nan), reported.get("delta", math.nan)
        lines.append(f"| {site} | {_reported(epsilon, '.3f')} | {_reported(delta, '.3g')} |")
    return lines


def _reported(value: float, spec: str) -> str:
    return format(value, spec) if math.isfinite(value) else "not reported"


def evaluation_table(scores: Mapping[str, float]) -> list[str]:
    """The card's evaluation section: per task and language, the headline score (bold), its
    lenient twin, the share of well-formed answers and the task's other table metrics."""
    lines = [
        "## Evaluation (federated, val splits, last round)",
        "",
        "Headline scores (bold) count only answers in the task's own format; `_lenient` scores",
        "also read answers a lenient parser understands; `well_formed` is the share of answers",
        "in the task's format.",
        "",
        "| task | language | metric | value | better |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in score_rows({"value": scores}):
        metric, value = row["metric"], f"{row['value']:.3f}"
        if row["headline"]:
            metric, value = f"**{metric}** (headline)", f"**{value}**"
        lines.append(f"| {row['task']} | {row['lang']} | {metric} | {value} | {row['better']} |")
    return lines
