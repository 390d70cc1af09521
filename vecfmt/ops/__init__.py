"""Operations on dumps: inspect, validate, diff, report."""

from vecfmt.ops.diff import DiffResult, diff_dumps
from vecfmt.ops.inspect import inspect_dump
from vecfmt.ops.report import build_report, write_report
from vecfmt.ops.validate import Problem, validate_dump

__all__ = ["DiffResult", "Problem", "build_report", "diff_dumps", "inspect_dump", "validate_dump", "write_report"]
