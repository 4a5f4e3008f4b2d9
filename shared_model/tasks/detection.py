"""Disease detection (stage 2): bounding boxes of the record's ``target`` on the 0-1000 grid.

The answer follows Qwen2-VL's grounding format: the target name once in an object reference,
then one box group per box::

    <|object_ref_start|>nodule<|object_ref_end|><|box_start|>(120,80),(260,210)<|box_end|>
    <|object_ref_start|>tumour<|object_ref_end|><|box_start|>[(1,2,3),(40,50,60)]<|box_end|>

A record without boxes (the target is absent) answers ``none`` (Chinese ``无``) after the
object reference, and reads back as an empty list. The parser accepts answers with or without
the object reference and the box tokens.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from shared_model.metrics import best_ious, count_matches, mean
from shared_model.tasks.base import Task, base_counts, check_lang, pick_template
from shared_model.tasks.coords import (
    BOX_END,
    BOX_START,
    REF_END,
    REF_START,
    Box,
    format_box,
    read_boxes,
    strip_markup,
    to_grid_box,
)
from shared_model.tasks.text import normalize_answer

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
    """2 or 3 from the record's boxes; ``None`` when it has none."""
    boxes = fields.get("boxes") or []
    return len(boxes[0]) // 2 if boxes else None


class DetectionTask(Task):
    """Box every instance of the record's ``target``; ``boxes`` are on the 0-1000 grid."""

    name = "detection"
    stage = "instruct"

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

    def _parse(self, text: str, fields: Mapping[str, Any]) -> list[Box] | None:
        boxes = read_boxes(text, _dimension(fields))
        if boxes:
            return boxes
        return [] if normalize_answer(strip_markup(text)) in NO_BOX_ANSWERS else None

    def score(
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
        result = base_counts(predictions, references)
        reference_boxes = sum(len(boxes) for boxes in references)
        if reference_boxes == 0:
            return result
        pairs = list(zip(predictions, references, strict=True))
        hits = sum(count_matches(p, r, IOU_THRESHOLD) for p, r in pairs)
        predicted_boxes = sum(len(p or []) for p, _ in pairs)
        precision = hits / predicted_boxes if predicted_boxes else 0.0
        recall = hits / reference_boxes
        result["mean_iou"] = mean([iou for p, r in pairs for iou in best_ious(p, r)])
        result["map50"] = precision * recall
        result["precision50"] = precision
        result["recall50"] = recall
        return result
