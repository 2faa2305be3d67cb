"""examples/fruits360_info.{csv,json}: the example ``fruitlens serve --info`` file covers
every class of Fruits-360 (the 131 folder names of ../shared/data/fruits360-mini, and the 4
of ../shared/data/fruits360-sample) and both
formats load to the same thing with :func:`fruitlens.serve.load_info`."""

from __future__ import annotations

from pathlib import Path

import pytest

from fruitlens.serve import load_info

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SAMPLE_CLASSES = ("apple", "lemon", "mango", "raspberry")
FIELDS = {"display_name", "description", "kind", "family", "scientific_name"}


@pytest.fixture(scope="module")
def info() -> dict:
    return load_info(EXAMPLES / "fruits360_info.csv")


def test_covers_every_fruits360_class(info: dict, shared_dir: Path) -> None:
    mini = shared_dir / "data" / "fruits360-mini"
    classes = sorted(d.name for d in mini.iterdir() if d.is_dir())
    assert len(classes) == 131
    # the 131 classes, and the 4 of fruits360-sample (apple, lemon, mango, raspberry)
    assert sorted(info) == sorted([*classes, *SAMPLE_CLASSES])


def test_every_label_has_every_field(info: dict) -> None:
    for label, fields in info.items():
        assert set(fields) == FIELDS, label
        assert all(value.strip() == value and value for value in fields.values()), label
        assert fields["kind"] in ("fruit", "vegetable", "nut"), label
        assert fields["description"].endswith("."), label
    names = [fields["display_name"] for fields in info.values()]
    assert len(set(names)) == len(names)  # a display name tells the classes apart


def test_json_is_the_same_as_csv(info: dict) -> None:
    assert load_info(EXAMPLES / "fruits360_info.json") == info
