"""docs/aws/modes.md's cost table is what aws/modes.py computes from the measured
throughput and the dated prices."""

from __future__ import annotations

import re
from pathlib import Path

from dogbreed.aws import modes, up

PAGE = Path(__file__).resolve().parents[3] / "docs" / "aws" / "modes.md"


def docs_rows() -> dict[str, tuple[float, float]]:
    """Mode -> ($ per million busy, $ for the small month) as the page's table gives them."""
    rows = re.findall(
        r"^\| ([a-z -]+?)[,|][^$\n]*\| \$([0-9.]+) \| \$([0-9.]+)", PAGE.read_text(), re.M
    )
    return {mode.strip(): (float(busy), float(month)) for mode, busy, month in rows}


def test_the_cost_table_is_the_docs():
    shown = docs_rows()
    computed = modes.cost_table()
    assert set(shown) == {m.name for m in computed}
    for mode in computed:
        assert shown[mode.name] == (round(mode.busy_per_million, 3), round(mode.small_month, 2))


def test_the_figures_are_dated_and_priced_from_the_table():
    text = PAGE.read_text()
    assert modes.MEASURED_ON in text and up.PRICES_AS_OF in text
    assert f"{modes.ENDPOINT_IMAGES_PER_S} images/s" in text
    assert f"{modes.TRANSFORM_IMAGES_PER_S} images/s" in text
    assert f"{modes.SERVERLESS_MS_PER_IMAGE} ms" in text


def test_batch_is_the_cheapest_busy_and_real_time_the_dearest_small():
    table = {m.name: m for m in modes.cost_table()}
    busy = sorted(table.values(), key=lambda m: m.busy_per_million)
    assert busy[0].name == "batch transform" and busy[-1].name == "serverless"
    assert max(table.values(), key=lambda m: m.small_month).name == "real-time"
