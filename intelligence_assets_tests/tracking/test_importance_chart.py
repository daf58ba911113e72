import math
import xml.etree.ElementTree as ElementTree

import pytest

from intelligence_assets.tracking.importance_chart import importance_svg

SVG = "{http://www.w3.org/2000/svg}"


def bars(svg: str) -> list[tuple[str, float]]:
    """(feature, bar width) from top to bottom, read back from the SVG."""
    root = ElementTree.fromstring(svg)
    found = []
    for rect in root.iter(f"{SVG}rect"):
        if rect.get("class") == "bar":
            found.append((rect.find(f"{SVG}title").text.rsplit(": ", 1)[0], float(rect.get("width"))))
    return found


def test_bars_are_sorted_and_proportional_to_importance() -> None:
    svg = importance_svg(["ret_1", "vol_21", "atr_14"], [2.0, 8.0, 4.0], "lightgbm MSFT y_up_1b: feature importance")
    drawn = bars(svg)
    assert [name for name, _ in drawn] == ["vol_21", "atr_14", "ret_1"]
    widths = [width for _, width in drawn]
    assert widths[1] / widths[0] == pytest.approx(0.5, abs=0.01) and widths[2] / widths[0] == pytest.approx(
        0.25, abs=0.01
    )
    assert "lightgbm MSFT y_up_1b: feature importance" in svg


def test_names_are_escaped_and_odd_values_do_not_break_the_chart() -> None:
    svg = importance_svg(["a<b", "c&d", "flat"], [math.nan, 1.0, 0.0], "<title & more>")
    drawn = dict(bars(svg))  # parses only if every name was escaped
    assert drawn["a<b"] == 0.0 and drawn["flat"] == 0.0 and drawn["c&d"] > 0.0
    assert bars(importance_svg(["x", "y"], [0.0, 0.0], "all zero")) == [("x", 0.0), ("y", 0.0)]


def test_mismatched_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="2 feature names but 1 importances"):
        importance_svg(["x", "y"], [1.0], "t")
