"""Link input: sizes and positions are JSON integers, as the OpenAPI document says."""

from __future__ import annotations

import pytest

from gridlink.errors import InvalidRequest
from gridlink.schemas.base import load
from gridlink.schemas.links import LinkPatch


def test_a_whole_number_written_with_a_fraction_is_that_integer():
    # JSON has one number type: 2.0 is the integer 2 (JSON Schema agrees).
    assert load(LinkPatch(), {"width": 2.0, "position": 10.0}) == {"width": 2, "position": 10}


@pytest.mark.parametrize("width", [2.5, "2", True, None, 5.0])
def test_anything_else_is_not_a_size(width):
    with pytest.raises(InvalidRequest) as refused:
        load(LinkPatch(), {"width": width})
    assert refused.value.fields is not None
    assert list(refused.value.fields) == ["width"]
