"""Partitioned, resumable transfers on several workers: local processes or a Ray cluster (docs/parallel.md).

- ``export.py``: ``export_partitioned``, a store read slice by slice into one dump, committed once.
- ``importing.py``: ``import_partitioned``, a dump's files loaded by several workers into one target,
  prepared and finished once.
- ``engines.py``: where the partitions run (in this process, ``spawn`` worker processes, Ray tasks), with
  retries; the jobs plan the partitions and record what finished.
"""

from vecfmt.parallel.engines import DEFAULT_RETRIES, ENGINES
from vecfmt.parallel.export import default_workers, export_partitioned, run_partition
from vecfmt.parallel.importing import import_partitioned
from vecfmt.transfer import interrupted_job
from vecfmt.writer import JOB_STATE

__all__ = ["DEFAULT_RETRIES", "ENGINES", "JOB_STATE", "default_workers", "export_partitioned", "import_partitioned",
           "interrupted_job", "run_partition"]  # fmt: skip
