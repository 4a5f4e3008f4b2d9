"""The seven UMIT tasks: instruction templates, target text, parsing and metrics.

Each task (:class:`Task`) renders a manifest record's task fields as a bilingual instruction
and the answer the model learns, reads generated text back into a structured answer, and scores
structured answers. Stage ``align`` trains ``caption`` and ``compare``; stage ``instruct``
trains ``vqa``, ``classification``, ``report``, ``detection`` and ``landmark``.
"""

from shared_model.tasks.base import Task
from shared_model.tasks.registry import (
    ALIGN_TASKS,
    INSTRUCT_TASKS,
    STAGE_TASKS,
    TASK_NAMES,
    UnknownTaskError,
    get_task,
)

__all__ = [
    "ALIGN_TASKS",
    "INSTRUCT_TASKS",
    "STAGE_TASKS",
    "TASK_NAMES",
    "Task",
    "UnknownTaskError",
    "get_task",
]
