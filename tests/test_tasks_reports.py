"""One headline per task, the same in every report; Chinese text scored on characters; every
table shows the share of well-formed answers; the site's disclosure keeps the new scores."""

from __future__ import annotations

import json
import math
import random

import pytest
from sacrebleu.metrics import BLEU

from client.config import Policy
from client.disclosure import disclose_scores
from server.model_card import evaluation_table
from server.plots import draw_run_plots, eval_series
from shared_model.metrics import corpus_bleu, rouge_l, text_tokens
from shared_model.tasks import TASK_NAMES, Reading, get_task, headline_key, score_rows
from shared_model.tasks.scoring import is_count
from simulations.report import closed_form

GROUPS = {
    "caption": [({"text": "Chest film."}, "Chest film.")],
    "compare": [({"text": "No change."}, "No change")],
    "vqa": [
        ({"question": "Q?", "answer": "no", "options": ["yes", "no"]}, "2:no"),
        ({"question": "Where?", "answer": "left lung"}, "left lung"),
    ],
    "classification": [({"question": "Q?", "options": ["a", "b"], "label": 1}, "1: b")],
    "report": [({"report": "Normal heart."}, "Normal heart.")],
    "detection": [({"target": "x", "boxes": [[1, 2, 30, 40]]}, "(1,2),(30,40)")],
    "landmark": [({"landmark": "x", "point": [5, 6]}, "[5,6]")],
}


def scores_of_every_task() -> dict[str, float]:
    """Scores of a small group of every task in both languages, as evaluation keys them."""
    scores = {}
    for name, records in GROUPS.items():
        task = get_task(name)
        for lang in ("en", "zh"):
            readings = [task.read(text, fields, lang) for fields, text in records]
            references = [task.reference(fields) for fields, _ in records]
            for metric, value in task.score(readings, references, lang).items():
                scores[f"{name}/{lang}/{metric}"] = value
    return scores


def test_chinese_bleu_counts_characters() -> None:
    assert text_tokens("心脏正常，CT 3.5cm。", "zh") == [
        "心",
        "脏",
        "正",
        "常",
        "，",
        "CT",
        "3.5cm",
        "。",
    ]
    # 3 of 4 characters match, brevity penalty exp(1 - 6/4)
    assert corpus_bleu(["心脏增大"], ["心脏大小正常"], 1, "zh") == pytest.approx(
        0.75 * math.exp(-0.5), abs=1e-6
    )
    # on white-space words (13a) a Chinese sentence is one token, and any change scores 0
    assert corpus_bleu(["心脏增大"], ["心脏大小正常"], 1, "en") == 0.0
    # LCS 3 of 4 and of 6 characters
    assert rouge_l(["心脏增大"], ["心脏大小正常"], "zh") == pytest.approx(0.6)


@pytest.mark.parametrize("lang", ["en", "zh"])
@pytest.mark.parametrize("order", [1, 4])
def test_corpus_bleu_from_remembered_segments_is_sacrebleus_corpus_score(
    lang: str, order: int
) -> None:
    """Corpus BLEU is summed from each segment's remembered statistics; on random corpora
    (empty hypotheses, segments met in earlier corpora) it is exactly what sacrebleu's
    ``corpus_score`` reports."""
    english = ["a", "nodule", "mass", "in", "the", "left", "lung", ".", "Findings", ":"]
    words = {"en": english, "zh": list("所见左右侧肺部结节肿块印象正常。：")}[lang]
    rng = random.Random(order)
    for _ in range(40):
        n = rng.randint(1, 25)
        text = [" ".join(rng.choices(words, k=rng.randint(0, 12))) for _ in range(2 * n)]
        hypotheses, references = text[:n], [t or words[0] for t in text[n:]]
        bleu = BLEU(tokenize={"en": "13a", "zh": "zh"}[lang], max_ngram_order=order)
        expected = bleu.corpus_score(hypotheses, [references]).score / 100.0
        assert corpus_bleu(hypotheses, references, order, lang) == min(1.0, expected)


@pytest.mark.parametrize("name", TASK_NAMES)
def test_each_task_declares_one_headline_score(name: str) -> None:
    task = get_task(name)
    metrics = task.scored_metrics()
    assert metrics[0].name == task.headline and metrics[0].higher_is_better
    assert len({m.name for m in metrics}) == len(metrics)
    assert "well_formed" in {m.name for m in metrics}
    with pytest.raises(KeyError, match=f"task {name} has no score 'nonsense'"):
        task.metric("nonsense")


@pytest.mark.parametrize("name", TASK_NAMES)
def test_scores_are_the_declared_metrics(name: str) -> None:
    scores = scores_of_every_task()
    found = {k.split("/")[2] for k in scores if k.startswith(f"{name}/en/")}
    declared = {m.name for m in get_task(name).scored_metrics() if m.from_answers}
    assert {m for m in found if not is_count(m)} == declared


def test_malformed_answers_lower_the_well_formed_share() -> None:
    scores = scores_of_every_task()
    assert scores["classification/en/well_formed"] == 1.0  # "1: b" is the format
    assert scores["detection/en/well_formed"] == 0.0  # a box without its tokens
    assert scores["detection/en/map50"] == 0.0 and scores["detection/en/map50_lenient"] == 1.0
    assert scores["classification/zh/well_formed"] == 0.0  # ASCII colon in Chinese
    assert scores["vqa/zh/well_formed"] == 0.5


def test_the_headline_is_the_same_in_every_report(tmp_path) -> None:
    scores = scores_of_every_task()
    headlines = {headline_key(name, lang) for name in GROUPS for lang in ("en", "zh")}

    rows = score_rows({"round 0": {}, "final": scores})  # simulate's and compare's tables
    assert {f"{r['task']}/{r['lang']}/{r['metric']}" for r in rows if r["headline"]} == headlines
    assert all(isinstance(json.loads(json.dumps(r))["headline"], bool) for r in rows)
    assert {r["metric"] for r in rows} >= {"well_formed"}
    assert {(r["task"], r["lang"]) for r in rows if r["metric"] == "well_formed"} == {
        (name, lang) for name in GROUPS for lang in ("en", "zh")
    }
    assert {r["task"] for r in closed_form(rows)} == {
        "vqa",
        "classification",
        "detection",
        "landmark",
    }
    assert all(r["headline"] for r in closed_form(rows))

    card = [line.split(" | ") for line in evaluation_table(scores) if "(headline)" in line]
    assert {f"{c[0][2:]}/{c[1]}/{c[2][2:].split('**')[0]}" for c in card} == headlines

    records = [{"stage": "instruct", "round": 1, "eval": scores}]
    plotted = {name.replace(" ", "/") for name in eval_series(records, headline=True)}
    assert plotted == headlines
    assert len(eval_series(records, headline=False)) == len(headlines)
    assert {p.name for p in draw_run_plots(records, tmp_path)} == {"training.png", "privacy.png"}


def test_plots_skip_scores_of_unknown_tasks() -> None:
    records = [{"stage": "instruct", "round": 1, "eval": {"segmentation/en/dice": 0.5, "x": 1}}]
    assert eval_series(records, headline=True) == {}


def test_lower_is_better_is_said_where_it_holds() -> None:
    rows = score_rows({"final": scores_of_every_task()})
    assert {(r["task"], r["metric"]) for r in rows if r["better"] == "lower"} == {
        ("landmark", "mre")
    }
    assert "precision50" not in {r["metric"] for r in rows}  # explains map50; JSON only


def test_disclosure_keeps_well_formed_and_lenient_scores() -> None:
    task = get_task("vqa")
    fields = {"question": "Q?", "answer": "no", "options": ["yes", "no"]}
    readings = [task.read(text, fields, "en") for text in ("2:no", "no", "maybe") * 4]
    scores = {f"vqa/en/{k}": v for k, v in task.score(readings, [1] * 12, "en").items()}
    disclosed = disclose_scores(scores, Policy(min_group_size=10, count_rounding=5))
    assert disclosed["vqa/en/closed_accuracy"] == 0.33
    assert disclosed["vqa/en/closed_accuracy_lenient"] == 0.67
    assert disclosed["vqa/en/well_formed"] == 0.33
    assert disclosed["vqa/en/miss_rate"] == 0.33
    assert "vqa/en/misses" not in disclosed


def test_a_reading_is_well_formed_only_with_a_strict_answer() -> None:
    assert Reading(1, 1).well_formed and not Reading(None, 1).well_formed
