"""Synthetic bilingual hospitals in the real archive format (the embedded default).

Each hospital gets patients with chest X-rays (DICOM CR) and CT volumes (NIfTI or DICOM series),
lesions and landmarks of known class and place, and manifest records for all seven tasks in
English and Chinese, several per patient. Hospitals differ as real ones do: a Dirichlet skew
over lesion classes and modalities, different sizes, one hospital mostly Chinese. Everything
is seeded: the same seed writes the same bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simulations.imaging_writers import write_dicom_image, write_dicom_series, write_nifti
from simulations.phantoms import (
    HOSPITAL_SCANNER,
    LESION_CLASSES,
    Finding,
    Scanner,
    chest_xray,
    ct_volume,
)

OPTIONS = {"en": ["normal", *LESION_CLASSES], "zh": ["正常", "结节", "肿块", "囊肿"]}
SIDES = {"en": {"left": "left", "right": "right"}, "zh": {"left": "左侧", "right": "右侧"}}
YES_NO = {"en": ["yes", "no"], "zh": ["是", "否"]}
MODALITY_NAME = {"en": {"CR": "x-ray", "CT": "ct"}, "zh": {"CR": "X光", "CT": "CT"}}
LESION_WORD = {"en": "lesion", "zh": "病灶"}
MARKER_WORD = {"en": "marker", "zh": "标记"}


@dataclass(frozen=True)
class HospitalProfile:
    """How one synthetic hospital differs from the others."""

    name: str
    patients: int
    chinese_fraction: float
    ct_fraction: float
    class_weights: tuple[float, ...]  # normal, nodule, mass, cyst
    seed: int
    scanner: Scanner = HOSPITAL_SCANNER


def consortium_profiles(
    n_sites: int = 3, patients: int = 600, seed: int = 0, alpha: float = 2.0
) -> list[HospitalProfile]:
    """Hospitals with Dirichlet-skewed classes and modalities; the second is mostly Chinese."""
    rng = np.random.default_rng(seed)
    profiles = []
    for index in range(n_sites):
        weights = rng.dirichlet([alpha] * (len(LESION_CLASSES) + 1))
        profiles.append(
            HospitalProfile(
                name=f"hospital-{chr(ord('a') + index)}",
                patients=max(6, int(patients * (0.7 + 0.3 * index))),
                chinese_fraction=0.8 if index == 1 else 0.2,
                ct_fraction=float(rng.uniform(0.15, 0.45)),
                class_weights=tuple(float(w) for w in weights),
                seed=seed * 1000 + index,
            )
        )
    return profiles


def generate_consortium(
    out_dir: Path, n_sites: int = 3, patients: int = 600, seed: int = 0
) -> list[Path]:
    """Write ``n_sites`` hospital archives under ``out_dir``; return their folders."""
    return [
        write_hospital(out_dir / p.name, p) for p in consortium_profiles(n_sites, patients, seed)
    ]


PUBLIC_SEED = 7919
"""Keys the public archive's generator apart from every hospital's (``seed * 1000 + index``)."""


def generate_public_archive(
    out_dir: Path, patients: int = 64, seed: int = 0, scanner: Scanner = HOSPITAL_SCANNER
) -> Path:
    """A small archive of public records, as a public dataset would be: the hospitals' kinds
    of images and tasks imaged by ``scanner``, half of the records Chinese, every class
    equally likely, and no patient of any hospital. Sites use one for gradient directions
    (:mod:`client.privacy.subspace`) or contrast (:mod:`client.privacy.contrast`); the tiny
    base is pretrained on one from :data:`~simulations.phantoms.PUBLIC_SCANNER`
    (:mod:`shared_model.tiny.public`)."""
    classes = len(LESION_CLASSES) + 1
    profile = HospitalProfile(
        name="public",
        patients=patients,
        chinese_fraction=0.5,
        ct_fraction=0.3,
        class_weights=(1.0 / classes,) * classes,
        seed=PUBLIC_SEED + seed,
        scanner=scanner,
    )
    return write_hospital(out_dir, profile)


def write_hospital(archive: Path, profile: HospitalProfile) -> Path:
    """One hospital's images and ``manifest.jsonl``."""
    rng = np.random.default_rng(profile.seed)
    records: list[dict] = []
    for number in range(profile.patients):
        patient = f"{profile.name[-1].upper()}{number:04d}"
        split = _split(number)
        lang = "zh" if rng.random() < profile.chinese_fraction else "en"
        lesion = _lesion(rng, profile)
        previous = None
        for visit in range(2):
            relative = f"{patient}/cr-{visit}.dcm"
            stored, finding = chest_xray(rng, lesion, scanner=profile.scanner)
            write_dicom_image(
                archive / relative,
                stored,
                patient_id=patient,
                modality="CR",
                spacing=(0.4, 0.4),
                window=profile.scanner.window,
            )
            records += xray_records(patient, relative, finding, lang, split, visit)
            if previous is not None:
                records.append(_compare(patient, previous, relative, lang, split))
            previous = (relative, finding)
        if rng.random() < profile.ct_fraction:
            volume, finding = ct_volume(rng, lesion, scanner=profile.scanner)
            if number % 2:
                relative = f"{patient}/ct.nii.gz"
                write_nifti(archive / relative, volume, spacing=(0.8, 0.8, 2.5))
            else:
                relative = f"{patient}/ct"
                order = rng.permutation(len(volume)).tolist()
                write_dicom_series(
                    archive / relative,
                    volume,
                    patient_id=patient,
                    spacing=(0.8, 0.8, 2.5),
                    file_order=order,
                )
            records += ct_records(patient, relative, finding, lang, split)
    lines = [json.dumps(r, ensure_ascii=False, sort_keys=True) for r in records]
    (archive / "manifest.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return archive


def _split(number: int) -> str:
    """A tenth of the patients for validation and a tenth for the held-out test."""
    return {0: "val", 1: "test"}.get(number % 10, "train")


def _lesion(rng: np.random.Generator, profile: HospitalProfile) -> str | None:
    choice = rng.choice(len(profile.class_weights), p=profile.class_weights)
    return None if choice == 0 else LESION_CLASSES[choice - 1]


def _base(
    patient: str, record: str, task: str, lang: str, split: str, images: list[str], modality: str
) -> dict:
    return {
        "id": f"{patient}-{record}",
        "patient_id": patient,
        "task": task,
        "lang": lang,
        "split": split,
        "images": images,
        "modality": modality,
    }


def _describe(finding: Finding, lang: str, modality: str) -> str:
    name = MODALITY_NAME[lang][modality]
    if finding.lesion is None:
        return f"{name} without any lesion." if lang == "en" else f"{name}图像，未见病灶。"
    kind = OPTIONS[lang][LESION_CLASSES.index(finding.lesion) + 1]
    side = SIDES[lang][finding.side]
    if lang == "en":
        return f"{name} showing a {kind} in the {side} lung."
    return f"{name}图像显示{side}肺部有{kind}。"


def xray_records(
    patient: str, image: str, finding: Finding, lang: str, split: str, visit: int
) -> list[dict]:
    """Caption, VQA (closed and open), classification, report, detection, landmark."""

    def base(task: str, tag: str) -> dict:
        return _base(patient, f"cr{visit}-{tag}", task, lang, split, [image], "CR")

    label = 0 if finding.lesion is None else LESION_CLASSES.index(finding.lesion) + 1
    yes, no = YES_NO[lang]
    present = "Is there a lesion?" if lang == "en" else "图像中有病灶吗？"
    records = [
        {**base("caption", "caption"), "text": _describe(finding, lang, "CR")},
        {
            **base("vqa", "present"),
            "question": present,
            "answer": yes if finding.lesion else no,
            "options": [yes, no],
        },
        {
            **base("vqa", "modality"),
            "answer": MODALITY_NAME[lang]["CR"],
            "question": "What is the imaging modality?" if lang == "en" else "这是什么成像方式？",
        },
        {
            **base("classification", "class"),
            "options": OPTIONS[lang],
            "label": label,
            "question": "What is the finding?" if lang == "en" else "影像所见是什么？",
        },
        {**base("report", "report"), "report": _report(finding, lang)},
        {
            **base("landmark", "marker"),
            "landmark": MARKER_WORD[lang],
            "point": [round(v, 2) for v in finding.landmark],
        },
    ]
    if finding.lesion is not None:
        sides = list(SIDES[lang].values())
        records += [
            {
                **base("vqa", "side"),
                "options": sides,
                "answer": SIDES[lang][finding.side],
                "question": "Which lung is the lesion in?"
                if lang == "en"
                else "病灶位于哪一侧肺？",
            },
            {
                **base("detection", "detect"),
                "target": LESION_WORD[lang],
                "boxes": [[round(v, 2) for v in finding.box]],
            },
        ]
    return records


def ct_records(patient: str, image: str, finding: Finding, lang: str, split: str) -> list[dict]:
    """3D classification, detection, landmark and VQA on a CT volume."""

    def base(task: str, tag: str) -> dict:
        return _base(patient, f"ct-{tag}", task, lang, split, [image], "CT")

    label = 0 if finding.lesion is None else LESION_CLASSES.index(finding.lesion) + 1
    records = [
        {
            **base("classification", "class"),
            "options": OPTIONS[lang],
            "label": label,
            "question": "What is the finding in this CT?" if lang == "en" else "该CT的所见是什么？",
        },
        {
            **base("landmark", "marker"),
            "landmark": MARKER_WORD[lang],
            "point": [round(v, 2) for v in finding.landmark],
        },
        {
            **base("vqa", "modality"),
            "answer": MODALITY_NAME[lang]["CT"],
            "question": "What is the imaging modality?" if lang == "en" else "这是什么成像方式？",
        },
        {**base("caption", "caption"), "text": _describe(finding, lang, "CT")},
    ]
    if finding.lesion is not None:
        records.append(
            {
                **base("detection", "detect"),
                "target": LESION_WORD[lang],
                "boxes": [[round(v, 2) for v in finding.box]],
            }
        )
    return records


def _report(finding: Finding, lang: str) -> str:
    if finding.lesion is None:
        return (
            "Findings: lungs are clear. Impression: normal."
            if lang == "en"
            else "所见：双肺清晰。印象：正常。"
        )
    kind = OPTIONS[lang][LESION_CLASSES.index(finding.lesion) + 1]
    side = SIDES[lang][finding.side]
    if lang == "en":
        return f"Findings: a {kind} in the {side} lung. Impression: {kind}."
    return f"所见：{side}肺部见{kind}。印象：{kind}。"


def _compare(patient: str, first: tuple[str, Finding], second: str, lang: str, split: str) -> dict:
    same = first[1].lesion is not None
    text = {
        ("en", True): "Both images show the same lesion.",
        ("en", False): "Neither image shows a lesion.",
        ("zh", True): "两张图像显示相同的病灶。",
        ("zh", False): "两张图像均未见病灶。",
    }[(lang, same)]
    return {
        **_base(patient, "compare", "compare", lang, split, [first[0], second], "CR"),
        "text": text,
    }
