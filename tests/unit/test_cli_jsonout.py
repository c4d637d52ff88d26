"""The CLI's JSON text is exactly ``json.dumps(data, indent=2, default=str)``, whatever
the data: listings of flat records take the fast path, everything else the library's."""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from virtlife.cli import jsonout

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.text(),
                    st.floats(allow_nan=True, allow_infinity=True))
# Braces, commas, quotes and newlines in strings: what could fool the joint rewriting.
tricky = st.text(alphabet="{}[],:\"\\\n\t aé€😀", max_size=12)
records = st.dictionaries(st.one_of(st.text(), tricky), st.one_of(scalars, tricky),
                          min_size=1, max_size=6)
documents = st.recursive(
    st.one_of(scalars, tricky, st.lists(records, max_size=5)),
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(st.one_of(st.text(), tricky), children,
                                               max_size=4)),
    max_leaves=30)


def expected(data: Any) -> str:
    return json.dumps(data, indent=2, default=str)


@settings(max_examples=400, deadline=None)
@given(documents)
def test_any_document_is_encoded_as_json_dumps_does(data: Any) -> None:
    assert jsonout.dumps(data) == expected(data)


def test_a_listing_takes_the_fast_path_and_reads_back() -> None:
    vms = [{"host": f"h{i % 3}", "name": f"vm-{i}" + "},\n  {", "state": "running",
            "reason": None, "vcpus": i, "memory_mib": 1.5 * i, "persistent": i % 2 == 0}
           for i in range(50)]
    data = {"vms": vms, "unreachable": [{"host": "down", "uri": "qemu+tcp://x/system",
                                         "error": "no route"}]}
    text = jsonout.dumps(data)
    assert text == expected(data)
    assert json.loads(text) == data
    assert jsonout._flat_record(vms[0])


def test_what_the_fast_path_does_not_take_is_still_exact() -> None:
    class Named:
        def __str__(self) -> str:
            return "named"

    for data in ({}, [], [{}], [{"a": 1}, {}], {"k": [1, [2]]}, {1: "int key"},
                 {"a": [{"b": {"c": 1}}]}, [{"n": math.nan, "i": -math.inf}],
                 {"odd": Named()}, [{"odd": Named()}], (1, 2), {"t": (1, {"x": None})}):
        assert jsonout.dumps(data) == expected(data), data
    assert not jsonout._flat_record({"a": True, "nested": [1]})
    assert not jsonout._flat_record({})
