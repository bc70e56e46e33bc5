"""Task specs, the data sources they name, and the immutable Task they load into."""

from streamsynth.task.sources import DataSource, make_source, read_rows
from streamsynth.task.spec import TaskSpec, parse_spec, read_spec
from streamsynth.task.task import Label, Task, load_task, task_from_spec

__all__ = sorted(
    ["DataSource", "Label", "Task", "TaskSpec", "load_task", "make_source", "parse_spec", "read_rows", "read_spec", "task_from_spec"]
)
