"""Operations on dumps: inspect, validate, diff."""

from vecfmt.ops.diff import DiffResult, diff_dumps
from vecfmt.ops.inspect import inspect_dump
from vecfmt.ops.validate import Problem, validate_dump

__all__ = ["DiffResult", "Problem", "diff_dumps", "inspect_dump", "validate_dump"]
