"""Data-root resolution (always) and the real-data loaders (skipped when the data are absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from samlib import data
from samlib.errors import DataNotFoundError, InvalidInputError


def test_data_root_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAMLIB_DATA", str(tmp_path / "env"))
    assert data.data_root(tmp_path / "explicit") == tmp_path / "explicit"
    assert data.data_root() == tmp_path / "env"
    monkeypatch.delenv("SAMLIB_DATA")
    default = Path(data.__file__).resolve().parent.parent.parent / "shared" / "data"
    assert data.data_root() == (default if default.is_dir() else None)


def test_require_data_explains_what_to_set(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError) as info:
        data.require_data("roads-eth", root=tmp_path)
    assert "roads-eth" in str(info.value) and "SAMLIB_DATA" in str(info.value)
    (tmp_path / "roads-eth").mkdir()
    assert data.require_data("roads-eth", root=tmp_path) == tmp_path / "roads-eth"
    with pytest.raises(DataNotFoundError, match="No files"):
        data.load_roads_eth(root=tmp_path)


def test_split_names_is_deterministic_and_disjoint() -> None:
    names = [f"img_{i:03d}" for i in range(100)]
    train, test = data.split_names(names, test_fraction=0.2, seed=0)
    assert len(test) == 20 and len(train) == 80 and not set(train) & set(test)
    assert data.split_names(list(reversed(names)), 0.2, 0) == (train, test)
    assert data.split_names(names, 0.2, 1)[1] != test
    with pytest.raises(InvalidInputError):
        data.split_names(names, 1.0)


def test_instances_from_binary() -> None:
    m = np.zeros((6, 8), dtype=np.uint8)
    m[0:2, 0:2] = 255
    m[4:6, 5:8] = 255
    m[2, 2] = 255  # touches the first blob diagonally: same instance with 8-connectivity
    inst = data.instances_from_binary(m)
    assert inst.shape == (2, 6, 8) and inst[0].sum() == 5 and inst[1].sum() == 6
    assert data.instances_from_binary(m, connectivity=4).shape[0] == 3
    assert data.instances_from_binary(m, min_area=6).shape[0] == 1
    assert data.instances_from_binary(np.zeros((3, 3))).shape == (0, 3, 3)


@pytest.mark.data
def test_load_dataset_rejects_bad_arguments(real_data_root: Path) -> None:
    with pytest.raises(InvalidInputError, match="Unknown data set"):
        data.load_dataset("pascal-voc")
    with pytest.raises(InvalidInputError, match="splits"):
        data.load_camvid(split="train")
    with pytest.raises(InvalidInputError, match="limit"):
        data.load_roads_eth(limit=-1)


def check_image(sample: data.Sample) -> tuple[int, int]:
    assert sample.image.dtype == np.uint8 and sample.image.ndim == 3 and sample.image.shape[2] == 3
    return sample.image.shape[:2]


@pytest.mark.data
def test_roads_eth(real_data_root: Path) -> None:
    samples = data.load_roads_eth(limit=2)
    assert [s.name for s in samples] == ["satImage_001", "satImage_002"]
    s = samples[0]
    assert check_image(s) == (400, 400)
    assert s.semantic is not None and set(np.unique(s.semantic)) <= {0, 1}
    assert 0.005 < s.foreground.mean() < 0.5 and s.masks is None
    test = data.load_roads_eth(split="test", limit=3)
    assert len(test) == 3 and {t.name for t in test} <= set(
        data.split_names([f"satImage_{i:03d}" for i in range(1, 101)])[1]
    )


@pytest.mark.data
def test_roads_deepglobe(real_data_root: Path) -> None:
    train = data.load_roads_deepglobe(limit=1)
    assert check_image(train[0]) == (1024, 1024) and train[0].semantic is not None
    assert 0 < train[0].foreground.mean() < 0.05
    valid = data.load_roads_deepglobe(split="valid", limit=1)
    assert valid[0].semantic is None and valid[0].masks is None


@pytest.mark.data
def test_buildings_spacenet_rio(real_data_root: Path) -> None:
    samples = data.load_buildings_spacenet_rio(limit=1)
    s = samples[0]
    h, w = check_image(s)
    assert s.masks is not None and s.boxes is not None and s.semantic is not None
    assert s.masks.shape[1:] == (h, w) and len(s.masks) == len(s.boxes) > 0
    np.testing.assert_array_equal(s.masks.any(0), s.semantic > 0)


@pytest.mark.data
def test_ships_hrsid(real_data_root: Path) -> None:
    samples = data.load_ships_hrsid(limit=3)
    assert all(check_image(s) == (800, 800) for s in samples)
    assert all(s.masks is not None and len(s.masks) >= 1 for s in samples)
    coco = [s for s in samples if s.meta["boxes_source"] == "coco"]
    assert coco, "the first images are covered by boxes_coco.json"
    s = next(x for x in samples if x.name == "P0001_1800_2600_3600_4400")
    assert s.boxes is not None and [270, 38, 332, 66] in s.boxes.tolist()


@pytest.mark.data
def test_mars_pits(real_data_root: Path) -> None:
    samples = data.load_mars_pits(split="test", limit=2)
    for s in samples:
        assert check_image(s) == (900, 900)
        assert s.boxes is not None and s.box_labels is not None and len(s.boxes) == len(s.box_labels) > 0
        assert (s.boxes[:, 2] > s.boxes[:, 0]).all() and (s.boxes[:, 3] > s.boxes[:, 1]).all()
        assert ((s.boxes[:, 2] - s.boxes[:, 0]) >= 0.005 * 900 - 1e-6).all()
        assert set(s.box_labels.tolist()) <= set(range(5)) and s.masks is None


@pytest.mark.data
def test_camvid(real_data_root: Path) -> None:
    s = data.load_camvid(limit=1)[0]
    assert check_image(s) == (360, 480)
    assert s.semantic is not None and s.semantic.max() <= data.CAMVID_IGNORE_INDEX
    assert len(data.CAMVID_CLASSES) == data.CAMVID_IGNORE_INDEX == 11


@pytest.mark.data
def test_aerial_dubai_buildings_are_the_building_class_of_aerial_dubai(real_data_root: Path) -> None:
    classes = data.load_aerial_dubai(limit=3)
    buildings = data.load_aerial_dubai_buildings(limit=3)
    assert [s.name for s in buildings] == [s.name for s in classes] == [f"tile1_part{k}" for k in (1, 2, 3)]
    for s, c in zip(buildings, classes, strict=True):
        assert s.dataset == "aerial-dubai" and s.meta == {}
        np.testing.assert_array_equal(s.image, c.image)
        assert s.semantic is not None and s.masks is not None and s.boxes is not None
        np.testing.assert_array_equal(s.semantic, (c.semantic == data.DUBAI_CLASSES.index("Building")))
        np.testing.assert_array_equal(s.masks.any(0), s.semantic > 0)
        assert len(s.masks) == len(s.boxes)
    assert sum(len(s.masks) for s in buildings if s.masks is not None) > 0  # part 2 has no building
    assert data.AERIAL_DUBAI_CLASSES["building"] == (60, 16, 152)
    with pytest.raises(InvalidInputError, match="splits"):
        data.load_aerial_dubai_buildings(split="train")
