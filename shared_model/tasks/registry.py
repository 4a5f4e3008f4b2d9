"""The task registry: every task by name, and which stage trains which tasks."""

from __future__ import annotations

from shared_model.spec import STAGES
from shared_model.tasks.base import Task
from shared_model.tasks.caption import CaptionTask
from shared_model.tasks.classification import ClassificationTask
from shared_model.tasks.compare import CompareTask
from shared_model.tasks.detection import DetectionTask
from shared_model.tasks.landmark import LandmarkTask
from shared_model.tasks.report import ReportTask
from shared_model.tasks.vqa import VQATask

_TASK_TYPES: tuple[type[Task], ...] = (
    CaptionTask,
    CompareTask,
    VQATask,
    ClassificationTask,
    ReportTask,
    DetectionTask,
    LandmarkTask,
)

TASK_NAMES: tuple[str, ...] = tuple(task.name for task in _TASK_TYPES)
STAGE_TASKS: dict[str, tuple[str, ...]] = {
    stage: tuple(task.name for task in _TASK_TYPES if task.stage == stage) for stage in STAGES
}
ALIGN_TASKS = STAGE_TASKS["align"]
INSTRUCT_TASKS = STAGE_TASKS["instruct"]


class UnknownTaskError(KeyError, ValueError):
    """A task name that no registered task has."""

    def __init__(self, name: object) -> None:
        self.name = name
        super().__init__(f"unknown task {name!r}; known tasks are {', '.join(TASK_NAMES)}")

    def __str__(self) -> str:
        return str(self.args[0])


def get_task(name: str) -> Task:
    """A fresh instance of the task called ``name``.

    Raises
    ------
    UnknownTaskError
        (a ``KeyError`` and a ``ValueError``) naming the known tasks.
    """
    for task in _TASK_TYPES:
        if task.name == name:
            return task()
    raise UnknownTaskError(name)
