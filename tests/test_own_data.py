"""Your own data, offline: ``data.dataset = "file:PATH"`` for .npz, .parquet,
.csv and image folders, written here into tmp_path; every problem with the
data refused up front (exit status 2, nothing written); ``hf:`` kept for the
Hub, and the CIFAR-10 configuration's loading path checked offline."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import fedforget
from fedforget.cli import main
from fedforget.config import ConfigError, DataConfig, load_scenario
from fedforget.data import RawDataset, build_federated_data
from fedforget.data.datasets import arrays_from_hf, load_raw
from tests.conftest import tiny

ROOT = Path(__file__).resolve().parent.parent


def _png(path: Path, pixels: np.ndarray) -> Path:
    """Write ``pixels`` (h, w) gray or (h, w, 3) RGB uint8 as a PNG."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def _csv(path: Path, **columns) -> Path:
    pd.DataFrame(columns).to_csv(path, index=False)
    return path


def _blobs(n: int, features: int = 6, classes: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Separable float32 clusters: something a tiny model can learn."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = rng.normal(size=(n, features)) + 3.0 * np.eye(classes, features)[y]
    return x.astype(np.float32), y.astype(np.int64)


# --- formats ------------------------------------------------------------------


def test_npz_tabular_keeps_features_and_labels(tmp_path):
    x, y = _blobs(40)
    np.savez(tmp_path / "t.npz", x=x, y=y)
    raw = load_raw(f"file:{tmp_path / 't.npz'}", seed=0)
    assert raw.x.dtype == np.float32 and raw.y.dtype == np.int64 and raw.test_mask is None
    np.testing.assert_array_equal(raw.x, x)  # tabular values are used as they are
    np.testing.assert_array_equal(raw.y, y)
    assert raw.num_classes == 3 and raw.input_shape == (6,)


def test_npz_images_channels_last_with_a_fixed_test_split(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, size=(10, 8, 8, 3), dtype=np.uint8)
    xt = rng.integers(0, 256, size=(4, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "im.npz", x=x, y=np.arange(10) % 2, x_test=xt, y_test=np.array([1, 0, 1, 1]))
    raw = load_raw(f"file:{tmp_path / 'im.npz'}", seed=0)
    assert raw.x.shape == (14, 3, 8, 8) and raw.x.dtype == np.float32
    expected = np.concatenate([x, xt]).transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255)
    np.testing.assert_array_equal(raw.x, expected)  # uint8 scaled to [0, 1], channels first
    assert raw.test_mask.tolist() == [False] * 10 + [True] * 4
    assert raw.y[10:].tolist() == [1, 0, 1, 1]


@pytest.mark.parametrize("shape, expected", [
    ((5, 7, 9), (5, 1, 7, 9)),        # gray images get a channel axis
    ((5, 3, 8, 8), (5, 3, 8, 8)),     # channels first is kept
    ((5, 9, 7, 1), (5, 1, 9, 7)),     # channels last (1, 3 or 4 behind h, w > 4) is transposed
    ((5, 3, 8, 4), (5, 3, 8, 4)),     # width 4 behind a 3-wide axis: channels first, kept
])
def test_npz_image_layouts(tmp_path, shape, expected):
    x = np.random.default_rng(2).random(shape, dtype=np.float32)
    np.savez(tmp_path / "l.npz", x=x, y=np.arange(5) % 2)
    raw = load_raw(f"file:{tmp_path / 'l.npz'}", seed=0)
    assert raw.x.shape == expected
    assert np.isclose(raw.x.sum(), x.sum())  # float images are not rescaled


def test_parquet_with_a_named_label_column_and_sparse_int_labels(tmp_path):
    x, _ = _blobs(12, features=3)
    df = pd.DataFrame(x, columns=["f0", "f1", "f2"])
    df["flag"] = np.arange(12) % 2 == 0  # booleans are numeric features
    df["target"] = np.array([9, 2, 5] * 4)
    df.to_parquet(tmp_path / "t.parquet")
    raw = load_raw(f"file:{tmp_path / 't.parquet'}", seed=0, label="target")
    assert raw.x.shape == (12, 4) and raw.num_classes == 3
    assert raw.y.tolist() == [2, 0, 1] * 4  # sorted unique values -> 0..K-1: 2->0, 5->1, 9->2
    np.testing.assert_array_equal(raw.x[:, :3], x)


def test_csv_with_string_labels_in_sorted_order(tmp_path):
    path = _csv(tmp_path / "t.csv", a=[0.5, 1.0, 2.0, 3.0], b=[1, 2, 3, 4], label=["dog", "cat", "emu", "cat"])
    raw = load_raw(f"file:{path}", seed=0)
    assert raw.y.tolist() == [1, 0, 2, 0] and raw.num_classes == 3  # cat, dog, emu
    np.testing.assert_array_equal(raw.x, np.array([[0.5, 1], [1, 2], [2, 3], [3, 4]], np.float32))


def test_image_folder_gray_by_class_name(tmp_path):
    rng = np.random.default_rng(3)
    pix = {f"{c}/{i}.png": rng.integers(0, 256, size=(6, 5), dtype=np.uint8) for c in ("zebra", "ant") for i in range(3)}
    for rel, p in pix.items():
        _png(tmp_path / "imgs" / rel, p)
    (tmp_path / "imgs" / "ant" / "notes.txt").write_text("not an image: skipped")
    raw = load_raw(f"file:{tmp_path / 'imgs'}", seed=0)
    assert raw.x.shape == (6, 1, 6, 5) and raw.test_mask is None
    assert raw.y.tolist() == [0, 0, 0, 1, 1, 1]  # ant, zebra: folders by name
    np.testing.assert_array_equal(raw.x[0, 0], pix["ant/0.png"] / np.float32(255))


def test_image_folder_with_train_and_test_and_one_rgb_image(tmp_path):
    rng = np.random.default_rng(4)
    for split, n in (("train", 3), ("test", 2)):
        for c in ("a", "b"):
            for i in range(n):
                _png(tmp_path / split / c / f"{i}.png", rng.integers(0, 256, size=(4, 4), dtype=np.uint8))
    rgb = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    _png(tmp_path / "test" / "b" / "9.png", rgb)
    raw = load_raw(f"file:{tmp_path}", seed=0)
    assert raw.x.shape == (11, 3, 4, 4)  # one RGB image: all RGB
    assert raw.test_mask.tolist() == [False] * 6 + [True] * 5
    assert raw.y.tolist() == [0, 0, 0, 1, 1, 1, 0, 0, 1, 1, 1]
    np.testing.assert_array_equal(raw.x[-1], rgb.transpose(2, 0, 1) / np.float32(255))
    assert np.array_equal(raw.x[0, 0], raw.x[0, 1])  # gray images repeated over RGB


# --- paths and the dataset key ------------------------------------------------------


def test_file_paths_resolve_against_the_current_directory_and_home(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert tiny(data={"dataset": "file:d/x.npz"}).data.dataset == f"file:{os.getcwd()}/d/x.npz"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert tiny(data={"dataset": "file:~/x.csv"}).data.dataset == f"file:{tmp_path}/home/x.csv"
    x, y = _blobs(8)
    np.savez("rel.npz", x=x, y=y)
    assert load_raw("file:rel.npz", seed=0).x.shape == (8, 6)


def test_unknown_dataset_names_both_prefixes():
    with pytest.raises(ConfigError, match=r"or hf:<hub id>; for local data: file:PATH"):
        tiny(data={"dataset": "cifar"})
    with pytest.raises(ConfigError, match="file: needs a path"):
        tiny(data={"dataset": "file:"})
    desc = DataConfig.model_fields["dataset"].description
    assert desc == ("an embedded dataset (digits, mnist5k, synthetic), file:PATH (local .npz, .parquet, .csv or "
                    "image folder) or hf:<hub id> (online)")


def test_hf_with_a_local_path_says_to_use_file(tmp_path):
    with pytest.raises(ConfigError, match=re.escape(f'for local data use data.dataset = "file:{tmp_path}"')) as err:
        load_raw(f"hf:{tmp_path}", seed=0)
    assert "reach" not in str(err.value)  # never blames the network for a path


# --- errors: one line, exit status 2, no run directory -----------------------------


def _images(d: Path, sizes: dict[str, tuple[int, int]]) -> Path:
    for rel, (h, w) in sizes.items():
        _png(d / "imgs" / rel, np.zeros((h, w), np.uint8))
    return d / "imgs"


def _npz(d: Path, **arrays) -> Path:
    np.savez(d / "d.npz", **arrays)
    return d / "d.npz"


def _nan_images(d: Path) -> Path:
    x = np.zeros((6, 5, 5), np.float32)
    x[3, 1, 1] = np.nan
    return _npz(d, x=x, y=np.arange(6) % 2)


def _bad_image(d: Path) -> Path:
    root = _images(d, {"a/0.png": (4, 4), "b/0.png": (4, 4)})
    (root / "b" / "1.png").write_text("not a png")
    return root


def _empty_class(d: Path) -> Path:
    root = _images(d, {"a/0.png": (4, 4), "b/0.png": (4, 4)})
    (root / "c").mkdir()
    return root


BAD_DATA = {  # name: (write the data into a folder -> dataset string, a phrase of the one error line)
    "missing file": (lambda d: f"file:{d / 'nope.npz'}", "nope.npz: no such file or directory"),
    "unknown extension": (lambda d: f"file:{_csv(d / 'data.txt', a=[1], label=[0])}", "unknown format '.txt'"),
    "no label column": (lambda d: f"file:{_csv(d / 't.csv', a=[1, 2], b=[3, 4], target=[0, 1])}",
                        "no label column 'label'; columns found: 'a', 'b', 'target'"),
    "text features": (lambda d: f"file:{_csv(d / 't.csv', a=[1, 2], city=['x', 'y'], label=[0, 1])}",
                      "non-numeric feature columns: 'city'"),
    "nan and inf in a table": (
        lambda d: f"file:{_csv(d / 't.csv', a=[1, np.nan, 3, 4, 5], b=[1, 2, 3, 4, np.inf], c=[1] * 5, label=[0, 1] * 2 + [0])}",
        "2 non-finite values (1 NaN, 1 infinite) in the feature columns at samples 1, 4 (0-based), in columns 'a', 'b'"),
    "nan in images": (lambda d: f"file:{_nan_images(d)}", "1 non-finite values (1 NaN, 0 infinite) in x at samples 3"),
    "mixed image sizes": (lambda d: f"file:{_images(d, {'a/0.png': (8, 8), 'a/1.png': (8, 8), 'b/0.png': (5, 6)})}",
                          "images differ in size: a/0.png is 8x8, b/0.png is 6x5"),
    "single class": (lambda d: f"file:{_npz(d, x=np.ones((20, 3)), y=np.zeros(20, int))}",
                     "the training data has one class (0)"),
    "fewer samples than clients": (lambda d: f"file:{_npz(d, x=np.ones((8, 3)), y=np.arange(8) % 2)}",
                                   "data.num_clients = 4 is too many for 6 training samples"),
    "no y array": (lambda d: f"file:{_npz(d, x=np.ones((8, 3)))}", "no array 'y' (arrays found: x)"),
    "missing labels": (lambda d: f"file:{_csv(d / 't.csv', a=[1, 2, 3], label=['a', None, 'b'])}",
                       "label column 'label' has 1 missing values at rows 1"),
    "fractional labels": (lambda d: f"file:{_npz(d, x=np.ones((4, 3)), y=np.array([0, 0.5, 1, 1]))}",
                          "y holds fractional numbers"),
    "unreadable image": (lambda d: f"file:{_bad_image(d)}", "cannot read image b/1.png"),
    "empty class folder": (lambda d: f"file:{_empty_class(d)}", "class folders without images: c"),
    "hf with a local path": (lambda d: f"hf:{d}", 'for local data use data.dataset = "file:'),
}


@pytest.mark.parametrize("case", list(BAD_DATA))
def test_bad_data_is_refused_before_anything_is_written(tmp_path, capsys, case):
    make, phrase = BAD_DATA[case]
    data = tmp_path / "data"
    data.mkdir()
    scenario = tmp_path / "s.toml"
    scenario.write_text(tiny(data={"dataset": make(data)}).to_toml())
    out = tmp_path / "run"
    assert main(["run", str(scenario), "--out", str(out), "--engine", "inline", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and phrase in err[0], err
    assert not out.exists()


# --- end to end ---------------------------------------------------------------


def test_inline_run_on_an_npz_gives_every_sample_one_role(tmp_path):
    x, y = _blobs(200)
    xt, yt = _blobs(40, seed=1)
    np.savez(tmp_path / "own.npz", x=x, y=y, x_test=xt, y_test=yt)
    sc = tiny(data={"dataset": f"file:{tmp_path / 'own.npz'}", "num_clients": 4}, train={"rounds": 2})
    res = fedforget.run(sc, out=tmp_path / "run")
    splits = pd.read_parquet(res.run_dir / "splits.parquet")
    assert sorted(splits.sample_id.tolist()) == list(range(240))  # every sample id exactly once
    assert set(splits[splits.role.isin(["test", "server_validation"])].sample_id) == set(range(200, 240))
    # The same partitioning and roles as the same arrays given in memory.
    raw = RawDataset(np.r_[x, xt], np.r_[y, yt], 3, np.arange(240) >= 200)
    same = build_federated_data(sc.data.model_dump(), sc.seed, raw=raw).splits()
    key = ["sample_id"]
    pd.testing.assert_frame_equal(splits.sort_values(key).reset_index(drop=True),
                                  same.sort_values(key).reset_index(drop=True), check_dtype=False)
    assert res.final() > 0.5  # it learned the clusters: the data reached the model


def test_data_label_reaches_the_loader(tmp_path):
    path = _csv(tmp_path / "t.csv", a=np.arange(20.0), target=np.arange(20) % 2)
    sc = tiny(data={"dataset": f"file:{path}", "label": "target"})
    assert build_federated_data(sc.data.model_dump(), sc.seed).num_classes == 2


# --- the CIFAR-10 configuration, offline --------------------------------------------


def test_cifar10_schema_from_the_hub_loads_as_channels_first_floats():
    """uoft-cs/cifar10's schema (an ``img`` Image column, a ClassLabel
    ``label``) built in memory: what ``hf:uoft-cs/cifar10`` goes through."""
    import datasets
    from PIL import Image

    rng = np.random.default_rng(5)
    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(num_classes=10)})

    def split(n):
        pixels = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n)
        ds = datasets.Dataset.from_dict({"img": [Image.fromarray(p) for p in pixels], "label": labels.tolist()},
                                        features=features)
        return ds, pixels, labels

    (train, px, ly), (test, pxt, lyt) = split(12), split(5)
    raw = arrays_from_hf(datasets.DatasetDict({"train": train, "test": test}))
    assert raw.x.shape == (17, 3, 32, 32) and raw.x.dtype == np.float32
    assert 0.0 <= raw.x.min() and raw.x.max() <= 1.0
    expected = np.concatenate([px, pxt]).transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255)
    np.testing.assert_allclose(raw.x, expected, rtol=1e-6)
    assert raw.y.tolist() == [*ly.tolist(), *lyt.tolist()] and raw.test_mask.sum() == 5


def test_cifar10_config_validates_offline():
    sc = load_scenario(ROOT / "configs" / "cifar10_resnet18.toml")
    assert sc.data.dataset == "hf:uoft-cs/cifar10" and sc.model.name == "resnet18"
    assert sc.data.num_clients == 100 and sc.runtime.device == "cuda" and len(sc.events) == 1
