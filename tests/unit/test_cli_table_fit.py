"""A table's one fitted column (``cli.table.fit_column``, the history's DETAIL) is cut
with "…" so that each row fits the width; the other columns and short cells stay whole."""

from __future__ import annotations

from virtlife.cli.table import GAP, cut, fit_column

COLUMNS = ["ID", "DETAIL"]


def test_a_long_cell_is_cut_to_the_room_left_beside_the_others() -> None:
    rows = [["abc", "x" * 100], ["abcdef", "short"]]
    width = 30
    fitted = fit_column(COLUMNS, rows, 1, width)
    room = width - len("abcdef") - len(GAP)
    assert fitted == [["abc", "x" * (room - 1) + "…"], ["abcdef", "short"]]
    assert all(len("abcdef" + GAP + r[1]) <= width for r in fitted)


def test_a_cell_that_fits_exactly_is_whole() -> None:
    assert fit_column(COLUMNS, [["a", "y" * 10]], 1, 2 + len(GAP) + 10) == [
        ["a", "y" * 10]]
    assert fit_column(COLUMNS, [["a", "y" * 11]], 1, 2 + len(GAP) + 10) == [
        ["a", "y" * 9 + "…"]]


def test_the_cut_column_keeps_at_least_its_header() -> None:
    assert fit_column(COLUMNS, [["a" * 50, "z" * 20]], 1, 40) == [["a" * 50, "zzzzz…"]]


def test_a_cut_counts_terminal_columns_and_keeps_one_line() -> None:
    assert cut("漢字漢字漢字", 6) == "漢字…"  # two columns each
    assert cut("one\ntwo   three", 20) == "one two three"
    assert cut("word " * 10, 12) == "word word w…"
    assert cut("abcd efgh", 6) == "abcd…"  # no space before the ellipsis
