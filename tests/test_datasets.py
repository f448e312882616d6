"""CIHP / MHPv2 readers and joint augmentations: synthetic data, hand-made bad files, real CIHP flips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from streamparse.categories import CIHP, MHPV2
from streamparse.data import (CIHPDataset, Compose, DatasetError, MHPv2Dataset, RandomFlip, ResizeShortSide,
                              generate_dataset, hflip)

READERS = {"cihp": CIHPDataset, "mhpv2": MHPv2Dataset}


@pytest.fixture(scope="module", params=["cihp", "mhpv2"])
def synth_root(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"synth_{request.param}")
    generate_dataset(root, request.param, 5, seed=3, size=(48, 64), split="val", min_people=1, max_people=4)
    return request.param, root


def test_readers_load_synth(synth_root):
    fmt, root = synth_root
    ds = READERS[fmt](root, "val")
    assert len(ds) == 5 and ds.ids[0] == "val_000000"
    for i in range(len(ds)):
        item = ds[i]
        assert item["image"].shape == (48, 64, 3) and item["image"].dtype == np.uint8
        assert 1 <= len(item["persons"]) <= 4
        taken = np.zeros((48, 64), bool)
        for p in item["persons"]:
            assert p.shape == (48, 64) and p.dtype == np.uint8 and p.any()
            assert p.max() < ds.label_space.num_classes
            assert not (taken & (p > 0)).any(), "persons overlap"
            taken |= p > 0
        image_id, persons = ds.load_gt(i)
        assert image_id == item["image_id"]
        assert all(np.array_equal(a, b) for a, b in zip(persons, item["persons"], strict=True))


def test_transform_is_applied(synth_root):
    fmt, root = synth_root
    space = READERS[fmt].label_space
    ds = READERS[fmt](root, "val", transform=Compose([RandomFlip(1.0, space, rng=0), ResizeShortSide(24, rng=0)]))
    plain = READERS[fmt](root, "val")[0]
    item = ds[0]
    assert item["image"].shape == (24, 32, 3)
    assert all(p.shape == (24, 32) for p in item["persons"])
    flipped = hflip(plain["image"], plain["persons"], space)[1]
    labels = set(np.unique(np.concatenate([p.ravel() for p in item["persons"]] + [np.zeros(1, np.uint8)])))
    assert labels <= set(np.unique(np.stack(flipped))) | {0}


# ----------------------------------------------------------------------------- hand-made files
def _png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _jpg(path: Path, h: int = 6, w: int = 8) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), 128, np.uint8)).save(path)


def _cihp(root: Path) -> Path:
    cat = np.zeros((6, 8), np.uint8)
    hum = np.zeros((6, 8), np.uint8)
    cat[1:4, 1:3], hum[1:4, 1:3] = 14, 1
    cat[2:5, 5:7], hum[2:5, 5:7] = 255, 2  # ignore label is kept
    _jpg(root / "Images" / "a.jpg")
    _png(root / "Category_ids" / "a.png", cat)
    _png(root / "Human_ids" / "a.png", hum)
    (root / "train_id.txt").write_text("a\n")
    return root


def _mhp(root: Path, n: int = 2) -> Path:
    _jpg(root / "images" / "a.jpg")
    for k in range(1, n + 1):
        lab = np.zeros((6, 8, 3), np.uint8)
        lab[k, 1:4, 0] = 30 + k
        _png(root / "parsing_annos" / f"a_{n:02d}_{k:02d}.png", lab)
    (root / "list").mkdir(parents=True, exist_ok=True)
    (root / "list" / "train.txt").write_text("a\n")
    return root


def test_handmade_cihp_ok(tmp_path):
    ds = CIHPDataset(_cihp(tmp_path))
    item = ds[0]
    assert [sorted(np.unique(p).tolist()) for p in item["persons"]] == [[0, 14], [0, 255]]


def test_handmade_mhpv2_ok_and_one_channel(tmp_path):
    root = _mhp(tmp_path)
    _png(root / "parsing_annos" / "a_02_02.png", np.full((6, 8), 5, np.uint8))  # 1-channel accepted
    _, persons = MHPv2Dataset(root).load_gt(0)
    assert [sorted(np.unique(p).tolist()) for p in persons] == [[0, 31], [5]]


def _garbage(path: Path) -> None:
    path.write_bytes(b"not an image at all")


# (name, setup(root) -> None, file named in the message, call)
CIHP_ERRORS = [
    ("missing category png", lambda r: (r / "Category_ids" / "a.png").unlink(), "Category_ids/a.png", "load_gt"),
    ("unreadable human png", lambda r: _garbage(r / "Human_ids" / "a.png"), "Human_ids/a.png", "load_gt"),
    ("unreadable jpeg", lambda r: _garbage(r / "Images" / "a.jpg"), "Images/a.jpg", "getitem"),
    ("missing jpeg", lambda r: (r / "Images" / "a.jpg").unlink(), "Images/a.jpg", "getitem"),
    ("size mismatch", lambda r: _png(r / "Category_ids" / "a.png", np.zeros((6, 9), np.uint8)), "Category_ids/a.png", "getitem"),
    ("human size mismatch", lambda r: _png(r / "Human_ids" / "a.png", np.zeros((5, 8), np.uint8)), "Human_ids/a.png", "load_gt"),
    ("label >= 20", lambda r: _png(r / "Category_ids" / "a.png", np.full((6, 8), 20, np.uint8)), "Category_ids/a.png", "load_gt"),
]


@pytest.mark.parametrize("name,setup,named,call", CIHP_ERRORS, ids=[e[0] for e in CIHP_ERRORS])
def test_cihp_errors_name_the_file(tmp_path, name, setup, named, call):
    root = _cihp(tmp_path)
    setup(root)
    ds = CIHPDataset(root)
    with pytest.raises(DatasetError, match=named):
        ds.load_gt(0) if call == "load_gt" else ds[0]


def _rename(src: Path, dst: Path) -> None:
    src.rename(dst)


MHP_ERRORS = [
    ("NN mismatch", lambda r: _rename(r / "parsing_annos" / "a_02_02.png", r / "parsing_annos" / "a_03_02.png"), "a_03_02.png"),
    ("KK gap", lambda r: [_rename(r / "parsing_annos" / f"a_02_0{k}.png", r / "parsing_annos" / f"a_02_0{k + 1}.png") for k in (2, 1)], "a_02_02.png"),
    ("no person file", lambda r: [p.unlink() for p in (r / "parsing_annos").iterdir()], "a_NN_KK.png"),
    ("label >= 59", lambda r: _png(r / "parsing_annos" / "a_02_01.png", np.full((6, 8, 3), 59, np.uint8)), "a_02_01.png"),
    ("unreadable png", lambda r: _garbage(r / "parsing_annos" / "a_02_02.png"), "a_02_02.png"),
    ("size mismatch", lambda r: _png(r / "parsing_annos" / "a_02_02.png", np.zeros((7, 8, 3), np.uint8)), "a_02_02.png"),
    ("missing image", lambda r: (r / "images" / "a.jpg").unlink(), "images/a.jpg"),
]


@pytest.mark.parametrize("name,setup,named", MHP_ERRORS, ids=[e[0] for e in MHP_ERRORS])
def test_mhpv2_errors_name_the_file(tmp_path, name, setup, named):
    root = _mhp(tmp_path)
    setup(root)
    ds = MHPv2Dataset(root)
    with pytest.raises(DatasetError, match=named):
        ds.load_gt(0)
    with pytest.raises(DatasetError, match=named):
        ds[0]


def test_missing_list_files(tmp_path):
    with pytest.raises(DatasetError, match="val_id.txt"):
        CIHPDataset(tmp_path, "val")
    with pytest.raises(DatasetError, match="list/val.txt"):
        MHPv2Dataset(tmp_path, "val")
    assert issubclass(DatasetError, ValueError)


# ------------------------------------------------------------------------------------ transforms
def test_hflip_matches_real_cihp_labels_rev(real_data):
    base = real_data / "cihp_pgn_samples"
    ids = [p.stem for p in sorted((base / "labels").glob("*.png"))]
    assert len(ids) == 5
    for image_id in ids:
        labels = np.asarray(Image.open(base / "labels" / f"{image_id}.png"))
        labels_rev = np.asarray(Image.open(base / "labels_rev" / f"{image_id}.png"))
        image = np.asarray(Image.open(base / "images" / f"{image_id}.jpg").convert("RGB"))
        image_f, (flipped,) = hflip(image, [labels], CIHP)
        assert np.array_equal(flipped, labels_rev), image_id
        assert np.array_equal(image_f, image[:, ::-1])
        assert not np.array_equal(labels[:, ::-1], labels_rev)  # the swap matters


@pytest.mark.parametrize("space", [CIHP, MHPV2], ids=lambda s: s.name)
def test_hflip_swaps_pairs_and_is_involution(space):
    rng = np.random.default_rng(0)
    lab = rng.integers(0, space.num_classes, (5, 7)).astype(np.uint8)
    lab[0, 0] = 255
    image = rng.integers(0, 255, (5, 7, 3)).astype(np.uint8)
    img2, (lab2,) = hflip(image, [lab], space)
    a, b = space.flip_pairs[0]
    assert np.array_equal(lab2 == b, (lab == a)[:, ::-1]) and lab2[0, -1] == 255
    img3, (lab3,) = hflip(img2, [lab2], space)
    assert np.array_equal(img3, image) and np.array_equal(lab3, lab)
    with pytest.raises(ValueError, match="uint8"):
        hflip(image, [lab[:4]], space)


def test_random_flip_and_resize():
    image = np.zeros((20, 40, 3), np.uint8)
    person = np.zeros((20, 40), np.uint8)
    person[5:10, 2:6] = 14
    person[0, 39] = 2  # a single pixel vanishes when downscaled 4x
    item = {"image_id": "x", "image": image, "persons": [person, (person == 2).astype(np.uint8) * 2]}
    assert RandomFlip(0.0, CIHP, rng=0)(item) is item
    out = RandomFlip(1.0, CIHP, rng=0)(item)
    assert out["persons"][0][5, 39 - 2] == 15 and out["image_id"] == "x"
    small = ResizeShortSide([5], max_long=None, rng=0)(item)
    assert small["image"].shape == (5, 10, 3) and len(small["persons"]) == 1
    assert set(np.unique(small["persons"][0])) <= {0, 2, 14}
    capped = ResizeShortSide((40, 60), max_long=50, rng=1)(item)
    assert capped["image"].shape == (25, 50, 3)
    with pytest.raises(ValueError):
        RandomFlip(1.5, CIHP)
