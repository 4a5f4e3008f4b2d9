"""Disease detection (stage 2): bounding boxes of the record's ``target`` on the 0-1000 grid.

The answer follows Qwen2-VL's grounding format: the target name once in an object reference,
then one box group per box::

    <|object_ref_start|>nodule<|object_ref_end|><|box_start|>(120,80),(260,210)<|box_end|>
    <|object_ref_start|>tumour<|object_ref_end|><|box_start|>[(1,2,3),(40,50,60)]<|box_end|>

A record without boxes (the target is absent) answers ``none`` (Chinese ``无``) after the
object reference, and reads back as an empty list. The strict reading takes an optional object
reference (first, not empty) followed by nothing but box groups in the record's dimension, or
the record language's ``none``/``无``; the lenient reading also takes answers without box
tokens, other notations and other words for "nothing" (see :mod:`shared_model.tasks.coords`).
Headline: ``map50`` of strict readings.

Boxes are ``[x1,y1,x2,y2]`` in source pixels, or ``[x1,y1,z1,x2,y2,z2]`` in voxels, in the
manifest; :meth:`DetectionTask.to_grid` moves them onto the grid of the fitted image and notes
the image's ``dimension``, which a record without boxes needs for its prompt and parser.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from shared_model.metrics import best_ious, count_matches, mean
from shared_model.sample import Geometry
from shared_model.tasks.base import Task, check_lang, pick_template
from shared_model.tasks.coords import (
    BOX_END,
    BOX_START,
    REF_END,
    REF_START,
    Box,
    format_box,
    read_boxes,
    read_boxes_strict,
    strip_markup,
    to_grid_box,
)
from shared_model.tasks.fields import FieldError, require_box, require_inside
from shared_model.tasks.scoring import Metric
from shared_model.tasks.text import fold, normalize_answer

IOU_THRESHOLD = 0.5
"""IoU at which a predicted box counts as a hit for ``map50``."""

NO_BOX = {"en": "none", "zh": "无"}
NO_BOX_ANSWERS = frozenset({"none", "no", "nothing", "not found", "无", "没有", "未见", "未发现"})

TEMPLATES_2D = {
    "en": (
        "Please detect the {target} in this image and output its bounding box.",
        "Where is the {target} in this image? Output its bounding box.",
        "Locate the {target} and give the coordinates of its bounding box.",
    ),
    "zh": (
        "请检测图像中的{target}并输出其边界框。",
        "图像中的{target}在哪里？请输出其边界框。",
        "请定位{target}，并给出其边界框的坐标。",
    ),
}

TEMPLATES_3D = {
    "en": (
        "Please detect the {target} in this volume and output its 3D bounding box.",
        "Where is the {target} in this scan? Output its 3D bounding box.",
        "Locate the {target} in this 3D image and give the coordinates of its bounding box.",
    ),
    "zh": (
        "请检测该三维影像中的{target}并输出其三维边界框。",
        "该扫描中的{target}在哪里？请输出其三维边界框。",
        "请在这个三维图像中定位{target}，并给出其边界框的坐标。",
    ),
}


def _dimension(fields: Mapping[str, Any]) -> int | None:
    """2 or 3: the image's ``dimension`` when noted, else from the record's boxes; ``None``
    when neither says."""
    boxes = fields.get("boxes") or []
    return fields.get("dimension") or (len(boxes[0]) // 2 if boxes else None)


def _without_reference(text: str) -> str | None:
    """The answer after its leading object reference (which may be absent, not empty)."""
    text = text.strip()
    if not text.startswith(REF_START):
        return text
    name, end, rest = text[len(REF_START) :].partition(REF_END)
    if not end or not name.strip() or "<|" in name:
        return None
    return rest


PRESENT = {"en": "{} present.", "zh": "可见{}。"}
ABSENT = {"en": "no {}.", "zh": "未见{}。"}
"""A target with boxes and one without, in a derived stage-1 caption."""


class DetectionTask(Task):
    """Box every instance of the record's ``target``; ``boxes`` are on the 0-1000 grid."""

    name = "detection"
    stage = "instruct"
    text_fields = ("target",)
    closed_form = True
    asks = ("target",)
    metrics = (
        Metric("map50", lenient=True),
        Metric("mean_iou"),
        Metric("precision50", in_tables=False),
        Metric("recall50", in_tables=False),
    )
    headline = "map50"

    def validate(self, fields: Mapping[str, Any]) -> None:
        """``target`` and ``boxes``, a list (empty when the target is absent) of boxes."""
        super().validate(fields)
        boxes = fields.get("boxes")
        if not isinstance(boxes, list):
            raise FieldError(f"field 'boxes' must be a list of boxes, got {boxes!r}")
        for box in boxes:
            require_box(box)

    def to_grid(self, fields: Mapping[str, Any], geometry: Geometry) -> dict[str, Any]:
        """Boxes from source pixels (voxels) onto the grid, checked to lie inside the image."""
        boxes = fields["boxes"]
        half = [(box[: len(box) // 2], box[len(box) // 2 :]) for box in boxes]
        require_inside([corner for pair in half for corner in pair], geometry)
        grid = [list(geometry.box_to_grid(box)) for box in boxes]
        return {**fields, "boxes": grid, "dimension": 3 if geometry.is_volume else 2}

    def stage1_phrase(self, fields: Mapping[str, Any], lang: str) -> str | None:
        """Whether the target is there: ``lesion present.`` (``可见病灶。``), or ``no lesion.``
        (``未见病灶。``) for a record without boxes."""
        target = str(fields["target"]).strip()
        words = PRESENT if fields.get("boxes") else ABSENT
        return words[check_lang(lang)].format(target) if target else None

    def to_source(self, value: Any, fields: Mapping[str, Any], geometry: Geometry) -> Any:
        """Boxes in source pixels (voxels), to two decimals."""
        if value is None:
            return None
        return [[round(v, 2) for v in geometry.box_to_source(box)] for box in value]

    def _question_fields(self, given: Mapping[str, Any], geometry: Geometry) -> dict[str, Any]:
        return {"target": given["target"], "dimension": 3 if geometry.is_volume else 2}

    def prompt(self, fields: Mapping[str, Any], lang: str) -> str:
        """A 2D or 3D (after the record's boxes) instruction, chosen by the target name."""
        target = str(fields["target"]).strip()
        templates = TEMPLATES_3D if _dimension(fields) == 3 else TEMPLATES_2D
        return pick_template(templates, lang, target).format(target=target)

    def target(self, fields: Mapping[str, Any], lang: str) -> str:
        """Object reference and one ``<|box_start|>...<|box_end|>`` group per box."""
        check_lang(lang)
        head = f"{REF_START}{str(fields['target']).strip()}{REF_END}"
        groups = "".join(f"{BOX_START}{format_box(box)}{BOX_END}" for box in self.reference(fields))
        return head + (groups or NO_BOX[lang])

    def reference(self, fields: Mapping[str, Any]) -> list[Box]:
        """The boxes as the target writes them: integer grid positions, corners ordered."""
        return [to_grid_box(box) for box in fields["boxes"]]

    def _parse(self, text: str, fields: Mapping[str, Any], lang: str) -> list[Box] | None:
        answer = _without_reference(text)
        if answer is None:
            return None
        if fold(answer) == NO_BOX[check_lang(lang)]:
            return []
        return read_boxes_strict(answer, _dimension(fields))

    def _parse_lenient(self, text: str, fields: Mapping[str, Any]) -> list[Box] | None:
        boxes = read_boxes(text, _dimension(fields))
        if boxes:
            return boxes
        return [] if normalize_answer(strip_markup(text)) in NO_BOX_ANSWERS else None

    def _scores(
        self,
        predictions: Sequence[Sequence[Box] | None],
        references: Sequence[Sequence[Box]],
        lang: str,
    ) -> dict[str, float]:
        """``mean_iou``, ``map50``, ``precision50`` and ``recall50``.

        ``mean_iou`` averages, over every reference box, its best IoU with a predicted box of the
        same record (0 for a miss). For ``map50`` each record's predicted boxes, in the order
        written, are matched one-to-one to its reference boxes (greedy by IoU, hit at IoU >= 0.5).
        Answers carry no confidence, so every box shares one score: the precision-recall curve is
        one point and all-point interpolated AP (one class) is ``precision50 * recall50``. The
        metrics are left out when the group has no reference box.
        """
        reference_boxes = sum(len(boxes) for boxes in references)
        if reference_boxes == 0:
            return {}
        pairs = list(zip(predictions, references, strict=True))
        hits = sum(count_matches(p, r, IOU_THRESHOLD) for p, r in pairs)
        predicted_boxes = sum(len(p or []) for p, _ in pairs)
        precision = hits / predicted_boxes if predicted_boxes else 0.0
        recall = hits / reference_boxes
        return {
            "map50": precision * recall,
            "mean_iou": mean([iou for p, r in pairs for iou in best_ious(p, r)]),
            "precision50": precision,
            "recall50": recall,
        }
