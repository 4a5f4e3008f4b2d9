"""Stage-1 pairs a site derives from its own records when its archive holds no captions.

Hospitals rarely keep image-caption pairs, but every annotated record says something about its
image in words: a report, a class name, the answer to a question, the target of a box. Stage 1
(``align``) needs exactly that: an image and text about it. So, by default, a site whose
archive holds no ``caption`` or ``compare`` record of a split derives ``caption`` samples from
the records it has (the site's ``[policy] derive_stage1``):

- ``when-missing`` (default): derive for a split only when it has no stage-1 record;
- ``always``: add derived captions beside the archive's own;
- ``never``: stage 1 trains on the archive's captions and comparisons only.

One derived caption per image and language joins the phrases of every record about that image,
in the records' order: a report as it is, a class as ``Finding: pneumonia.`` (``所见：肺炎。``),
a question with its answer (``Is there a lesion? yes``), a box's target as ``lesion present.``
(``可见病灶。``) or, without boxes, ``no lesion.`` (``未见病灶。``); each task says its own phrase
(:meth:`shared_model.tasks.Task.stage1_phrase`). Landmark records carry no words about the
image and add nothing. Derived samples keep their records' patient, split and language, so the
privacy unit and the splits are the archive's; they never leave the site and are never written
anywhere.

What it cost on the embedded tiny base at the former ``align`` learning rate of 2e-3, measured
with ``fedumit simulate --dataset NAME`` (epsilon 8) against the same with ``--align-rounds 0``:
stage 1 trains only the patch merger with the language model frozen, and the tiny language
model cannot write these captions (the align loss stays near 7.5), so the merger drifts. The
exported model's option AUC on the test split (one run each; the base in brackets) ended lower
with derived stage 1 on all three public datasets, most on PneumoniaMNIST: 0.51 against 0.70
(0.70), VQA-RAD closed questions 0.54 against 0.56 (0.49), AdrenalMNIST3D 0.59 against 0.67
(0.41). By accuracy every run ended at the majority answer. At 2e-4, now the default
(``simulations/defaults.py``), PneumoniaMNIST's ended at 0.72. Stage 1 is meant for a base
whose language model can write captions, such as Qwen2-VL-2B-Instruct. ``never`` is the switch
for a site whose own runs show the same loss.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from shared_model.sample import Sample
from shared_model.tasks import get_task

DERIVE_MODES = ("when-missing", "always", "never")
DERIVED_SUFFIX = "#stage1"

_JOIN = {"en": " ", "zh": ""}


def phrase(sample: Sample) -> str | None:
    """What ``sample``'s record says about its image, in its language (its task's
    :meth:`~shared_model.tasks.Task.stage1_phrase`); ``None`` when nothing."""
    return get_task(sample.task).stage1_phrase(sample.fields, sample.lang)


def derive_captions(samples: Sequence[Sample]) -> list[Sample]:
    """One ``caption`` sample per (image, language) of ``samples`` that have something to say
    (see :func:`phrase`), in first-seen order."""
    captions: dict[tuple, tuple[Sample, list[str]]] = {}
    for sample in samples:
        if len(sample.images) != 1:
            continue
        text = phrase(sample)
        if text is None:
            continue
        key = (sample.patient_id, sample.lang, sample.split, _image_key(sample))
        phrases = captions.setdefault(key, (sample, []))[1]
        if text not in phrases:
            phrases.append(text)
    return [
        Sample(
            record_id=first.record_id + DERIVED_SUFFIX,
            patient_id=first.patient_id,
            task="caption",
            lang=first.lang,
            split=first.split,
            images=first.images,
            geometries=first.geometries,
            fields={"text": _JOIN[first.lang].join(phrases)},
            modality=first.modality,
        )
        for first, phrases in captions.values()
    ]


def stage1_samples(
    samples: Sequence[Sample], mode: str, stage1_tasks: Sequence[str]
) -> list[Sample]:
    """The ``align`` samples of one split: the archive's own stage-1 records, plus captions
    derived from the other records as ``mode`` says (see the module docstring)."""
    if mode not in DERIVE_MODES:
        raise ValueError(f"derive_stage1 {mode!r} is not one of {DERIVE_MODES}")
    own = [s for s in samples if s.task in stage1_tasks]
    if mode == "never" or (mode == "when-missing" and own) or "caption" not in stage1_tasks:
        return own
    return own + derive_captions([s for s in samples if s.task not in stage1_tasks])


def _image_key(sample: Sample) -> str:
    image = sample.images[0]
    digest = hashlib.blake2b(image.tobytes(), digest_size=16)
    digest.update(str(image.shape).encode())
    return digest.hexdigest()
