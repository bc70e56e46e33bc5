"""Task specs and the immutable Task they load into."""

from streamsynth.task.spec import TaskSpec, parse_spec, read_spec
from streamsynth.task.task import Label, Task, load_task, read_jsonl, task_from_spec

__all__ = sorted(["Label", "Task", "TaskSpec", "load_task", "parse_spec", "read_jsonl", "read_spec", "task_from_spec"])
