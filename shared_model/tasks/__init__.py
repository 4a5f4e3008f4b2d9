"""The seven UMIT tasks, each in its own module, each the one home of everything about it.

A task (:class:`Task`) validates a manifest record's task fields and maps its coordinates onto
the model's grid, renders the record as a bilingual instruction and the answer the model learns,
reads generated text back strictly (the task's own format) and leniently, and scores the
readings: a headline metric, its lenient twin and the share of well-formed answers, with the
direction each metric improves in. Stage ``align`` trains ``caption`` and ``compare``; stage
``instruct`` trains ``vqa``, ``classification``, ``report``, ``detection`` and ``landmark``.
"""

from shared_model.tasks.base import Task
from shared_model.tasks.fields import FieldError
from shared_model.tasks.registry import (
    ALIGN_TASKS,
    INSTRUCT_TASKS,
    STAGE_TASKS,
    TASK_NAMES,
    UnknownTaskError,
    get_task,
)
from shared_model.tasks.scoring import Metric, Reading
from shared_model.tasks.tables import headline_key, score_rows, split_key

__all__ = [
    "ALIGN_TASKS",
    "INSTRUCT_TASKS",
    "STAGE_TASKS",
    "TASK_NAMES",
    "FieldError",
    "Metric",
    "Reading",
    "Task",
    "UnknownTaskError",
    "get_task",
    "headline_key",
    "score_rows",
    "split_key",
]
