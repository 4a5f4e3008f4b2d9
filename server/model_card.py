"""The model card written beside an exported model: what it is, how it was trained, privacy."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def model_card(
    *,
    run_id: str,
    base: str,
    fingerprint: str,
    records: Sequence[dict[str, Any]],
    config: dict[str, Any],
) -> str:
    """Markdown card from a run's metrics records and resolved config."""
    trained = [r for r in records if r.get("round", 0) > 0 and "failed" not in r]
    rounds = {
        s: max((r["round"] for r in trained if r["stage"] == s), default=0)
        for s in ("align", "instruct")
    }
    sites = sorted({s for r in trained for s in r.get("sites", [])})
    epsilon: dict[str, float] = {}
    for record in trained:
        epsilon.update(record.get("epsilon", {}))
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
        f"- sites that contributed: {len(sites)}",
        f"- aggregation: {config.get('aggregation')}, differential privacy: {config.get('dp')}",
        "",
        "## Privacy",
        "",
        "| site | final epsilon | delta |",
        "| --- | --- | --- |",
    ]
    delta = config.get("delta", "per site policy")
    lines += [f"| {site} | {value:.3f} | {delta} |" for site, value in sorted(epsilon.items())]
    lines += [
        "",
        "## Evaluation (federated, val splits, last round)",
        "",
        "| task | language | metric | value |",
        "| --- | --- | --- | --- |",
    ]
    for key, value in sorted(final_eval.items()):
        task, lang, metric = key.split("/")
        if metric not in ("count", "misses", "closed_count", "open_count"):
            lines.append(f"| {task} | {lang} | {metric} | {value:.3f} |")
    lines += [
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
