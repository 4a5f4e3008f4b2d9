"""Option separation: how well a model ranks a closed question's options, read from likelihoods.

Strict accuracy moves only when a model's first choice flips. A model that has begun to read
the images, but not enough to outweigh the training split's majority class, still answers the
majority everywhere and scores exactly the majority baseline. Scoring every option's whole
answer (``1:pneumonia`` and its end token) by its log-likelihood shows that learning earlier:
``option_auc`` is the one-vs-rest AUC of each option's share of the likelihood among the
records that share an option list (0.5 is chance, 1 a perfect ranking), averaged over the
options. It is a diagnostic beside the strict headline score, never instead of it: it does not
ask whether the model writes the answer well-formed, and a threshold that would turn the
ranking into answers is not something the model has.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import torch
from scipy.stats import rankdata
from transformers import ProcessorMixin

from shared_model.inputs import Encoded, collate, encode_example
from shared_model.loss import answer_log_likelihood, answer_window
from shared_model.sample import Sample
from shared_model.spec import ModelSpec
from shared_model.tasks import get_task


def option_log_likelihoods(
    model: torch.nn.Module,
    processor: ProcessorMixin,
    spec: ModelSpec,
    samples: Sequence[Sample],
    batch_size: int = 16,
) -> list[list[float] | None]:
    """For each sample, the log-likelihood of every option's answer under ``model`` (teacher
    forced, the sample's own prompt and images); ``None`` for a sample without listed options."""
    rows: list[Encoded] = []
    owners: list[int] = []
    for position, sample in enumerate(samples):
        task = get_task(sample.task)
        targets = task.option_targets(sample.fields, sample.lang)
        prompt = task.prompt(sample.fields, sample.lang) if targets else ""
        for target in targets or ():
            rows.append(
                encode_example(
                    processor,
                    sample.images,
                    prompt,
                    target,
                    canvas=spec.canvas,
                    max_length=spec.max_text_length,
                )
            )
            owners.append(position)
    device = next(model.parameters()).device
    scores: list[list[float] | None] = [None] * len(samples)
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            inputs = collate(rows[start : start + batch_size], processor.tokenizer.pad_token_id)
            inputs = inputs.to(device).inputs
            labels = inputs.pop("labels")
            window = answer_window(labels)
            logits = model(**inputs, logits_to_keep=window).logits
            likelihoods = answer_log_likelihood(logits, labels[:, -window:]).tolist()
            for owner, value in zip(owners[start : start + batch_size], likelihoods, strict=True):
                scores[owner] = [*(scores[owner] or []), value]
    return scores


def option_auc(
    samples: Sequence[Sample],
    likelihoods: Sequence[Sequence[float] | None],
    indices: Sequence[int] | None = None,
) -> dict[str, float]:
    """``{task}/{lang}/option_auc`` for every task and language with a record of each side of
    some option: the mean over options of the one-vs-rest AUC of that option's likelihood share,
    within each group of records that list the same options. With ``indices``, only those
    samples (repeats allowed, as in a bootstrap draw)."""
    return OptionShares(samples, likelihoods).auc(indices)


class OptionShares:
    """Each sample's option list and likelihood shares, read once, for :func:`option_auc` over
    many draws of the same samples (a bootstrap)."""

    def __init__(
        self, samples: Sequence[Sample], likelihoods: Sequence[Sequence[float] | None]
    ) -> None:
        self.entries: dict[int, tuple[tuple, np.ndarray, int]] = {}
        for position, (sample, scores) in enumerate(zip(samples, likelihoods, strict=True)):
            if scores is None:
                continue
            task = get_task(sample.task)
            key = (sample.task, sample.lang, tuple(task.option_targets(sample.fields, sample.lang)))
            shares = np.exp(np.asarray(scores) - np.logaddexp.reduce(scores))
            self.entries[position] = (key, shares, task.reference(sample.fields))

    def auc(self, indices: Sequence[int] | None = None) -> dict[str, float]:
        """:func:`option_auc` over ``indices`` (default: every sample)."""
        groups: dict[tuple, list[tuple[tuple, np.ndarray, int]]] = defaultdict(list)
        for position in self.entries if indices is None else indices:
            entry = self.entries.get(position)
            if entry is not None:
                groups[entry[0]].append(entry)
        aucs: dict[str, list[float]] = defaultdict(list)
        for (task_name, lang, options), members in groups.items():
            shares = np.stack([entry[1] for entry in members])
            right = np.array([entry[2] for entry in members])
            for option in range(len(options)):
                chosen = right == option
                if chosen.any() and not chosen.all():
                    aucs[f"{task_name}/{lang}/option_auc"].append(auc(shares[:, option], chosen))
        return {key: float(np.mean(values)) for key, values in aucs.items()}


def auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """The probability that a positive record scores above a negative one, ties counting half
    (the Mann-Whitney U statistic over the product of the two counts)."""
    ranks = rankdata(scores)
    count = int(positive.sum())
    others = len(scores) - count
    return float((ranks[positive].sum() - count * (count + 1) / 2) / (count * others))
