"""The metadata encoding rules (vecfmt/metadata.py, spec 3.4.1) on values no Arrow column produces."""

import datetime as dt
import decimal
import uuid

import numpy as np
import pyarrow as pa
import pytest

from vecfmt import metadata
from vecfmt.errors import InvalidDataError


def test_values_encode_as_strict_json():
    assert metadata.dumps({
        "f32": np.float32(0.5), "i": np.int64(3), "arr": np.arange(2), "b": bytearray(b"\xff"),
        "t": dt.time(1, 2), "d": dt.timedelta(seconds=90), "dec": decimal.Decimal("0.10"),
        "u": uuid.UUID(int=1),
    }) == ('{"f32": 0.5, "i": 3, "arr": [0, 1], "b": "/w==", "t": "01:02:00", "d": 90.0, "dec": "0.10", '
           '"u": "00000000-0000-0000-0000-000000000001"}')


@pytest.mark.parametrize("bad", [np.float32("nan"), float("inf"), np.float64("-inf")])
def test_nan_and_infinity_are_refused(bad):
    with pytest.raises(ValueError):
        metadata.dumps({"x": bad})


def test_a_type_without_json_form_is_refused():
    with pytest.raises(TypeError, match="object value has no JSON form"):
        metadata.dumps({"x": object()})


def test_own_metadata_errors_name_the_column_and_row():
    ids = pa.array(["a", "b"])
    folded = pa.RecordBatch.from_pydict({"x": pa.array([1, 2])})
    assert metadata.fold(ids, None, "metadata", folded).to_pylist() == ['{"x": 1}', '{"x": 2}']
    with pytest.raises(InvalidDataError, match=r"column 'metadata' of row 'b' holds NaN"):
        metadata.fold(ids, pa.array(["{}", '{"k": NaN}']), "metadata", folded)
    with pytest.raises(InvalidDataError, match=r"column 'metadata' of row 'a' holds NaN"):
        metadata.as_objects(pa.array(["NaN", None]), "metadata", ids)
    assert metadata.as_objects(pa.array(["  ", '{"k": 1}']), "metadata", ids).to_pylist() == [None, '{"k": 1}']
