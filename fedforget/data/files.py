"""Your own data from local files: ``data.dataset = "file:PATH"``.

What PATH names decides the format:

- ``.npz``: arrays ``x`` and ``y``, optionally ``x_test`` and ``y_test`` (a
  fixed test split). ``x`` of shape ``(n, f)`` is tabular; ``(n, h, w)`` gray
  images get a channel axis; ``(n, c, h, w)`` is kept; ``(n, h, w, c)`` with
  ``c`` in 1, 3, 4 and ``h, w > 4`` is transposed to ``(n, c, h, w)``. uint8
  images are scaled to [0, 1]; other values are used as they are.
- ``.parquet`` or ``.csv``: one row per sample, numeric feature columns and a
  label column named by ``data.label``.
- a directory: one sub-folder of images per class, or ``train/`` and
  ``test/`` sub-directories each holding such folders (a fixed test split).

Labels of every format become ``0..K-1`` in the sorted order of their unique
values (numbers in numeric order, text in text order, class folders by name),
so labels that are already ``0..K-1`` are unchanged. A problem with the data
is a :class:`~fedforget.config.ConfigError` naming the file and what to fix;
the runner loads the data before it writes anything, so ``fedforget run``
refuses such data with exit status 2.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from fedforget.config import ConfigError
from fedforget.data.datasets import RawDataset

PREFIX = "file:"
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})
#: Pillow modes with one channel (besides alpha): all of them -> "L", else "RGB".
GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "F"})
#: Positions or names an error message lists before "...".
SHOWN = 5


class _Invalid(Exception):
    """A problem with the data; :func:`load_file` adds where it is."""


def resolve(path: str) -> str:
    """``~`` expanded, a relative path made absolute against the current directory."""
    return os.path.abspath(os.path.expanduser(path))


def load_file(path: str, label: str = "label") -> RawDataset:
    """Load local data as a :class:`RawDataset`.

    Parameters
    ----------
    path : str
        An ``.npz``, ``.parquet`` or ``.csv`` file, or a directory of class folders.
    label : str
        The label column of a table (``data.label``).

    Raises
    ------
    ConfigError
        The path is missing, its format unknown, or the data unusable.
    """
    p = Path(resolve(path))
    try:
        if not p.exists():
            raise _Invalid("no such file or directory")
        x, labels, test_mask = _read(p, label)
        return _dataset(x, labels, test_mask)
    except _Invalid as err:
        raise ConfigError(f"{PREFIX}{p}: {err}") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:  # corrupt files: the readers' own errors
        raise ConfigError(f"{PREFIX}{p}: could not read it ({type(err).__name__}: {err})") from None


def _read(p: Path, label: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``(x, labels, test_mask)`` of a file or folder; labels not yet encoded."""
    if p.is_dir():
        return _read_folder(p)
    suffix = p.suffix.lower()
    if suffix == ".npz":
        return _read_npz(p)
    if suffix in (".parquet", ".csv"):
        return _read_table(p, label)
    raise _Invalid(f"unknown format {suffix or '(no extension)'!r}; expected .npz, .parquet, .csv "
                   "or a directory with one folder of images per class")


def _dataset(x: np.ndarray, labels: np.ndarray, test_mask: np.ndarray | None) -> RawDataset:
    """Encode labels as ``0..K-1`` (sorted unique values) and check there is something to learn."""
    if len(x) == 0:
        raise _Invalid("it holds no samples")
    classes, y = np.unique(labels, return_inverse=True)
    train = np.unique(y if test_mask is None else y[~test_mask])
    if len(train) < 2:
        only = f" ({classes[train[0]].item()!r})" if len(train) else ""
        raise _Invalid(f"the training data has one class{only}; a classifier needs at least two")
    return RawDataset(x=x, y=y.astype(np.int64), num_classes=len(classes), test_mask=test_mask)


def _listing(items) -> str:
    """The first :data:`SHOWN` items, comma-separated, and how many there are."""
    items = list(items)
    more = f", ... ({len(items)} in all)" if len(items) > SHOWN else ""
    return ", ".join(str(i) for i in items[:SHOWN]) + more


# --- .npz ------------------------------------------------------------------


def _read_npz(p: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``x``, ``y`` and, when present, ``x_test``/``y_test`` appended as the test split."""
    # allow_pickle=False: an .npz must not run code when loaded.
    loaded = np.load(p, allow_pickle=False)
    if not hasattr(loaded, "files"):  # np.save's single array under an .npz name
        raise _Invalid("it holds one array, not named arrays; save it as np.savez(PATH, x=..., y=...)")
    with loaded as f:
        arrays = {k: f[k] for k in f.files}
    missing = [k for k in ("x", "y") if k not in arrays]
    if ("x_test" in arrays) != ("y_test" in arrays):
        missing.append("y_test" if "x_test" in arrays else "x_test")
    if missing:
        raise _Invalid(f"no array {', '.join(map(repr, missing))} (arrays found: {_listing(sorted(arrays))}); "
                       "save it as np.savez(PATH, x=..., y=...) with optional x_test=..., y_test=...")
    x, y = _features(arrays["x"], "x"), _labels(arrays["y"], "y", len(arrays["x"]))
    if "x_test" not in arrays:
        return x, y, None
    xt, yt = _features(arrays["x_test"], "x_test"), _labels(arrays["y_test"], "y_test", len(arrays["x_test"]))
    if xt.shape[1:] != x.shape[1:]:
        raise _Invalid(f"x_test's samples have shape {xt.shape[1:]}, x's {x.shape[1:]}; they must match")
    if (y.dtype.kind in "US") != (yt.dtype.kind in "US"):
        raise _Invalid(f"y holds {y.dtype} labels, y_test {yt.dtype}; give both as numbers or both as text")
    return np.concatenate([x, xt]), np.concatenate([y, yt]), np.r_[np.zeros(len(x), bool), np.ones(len(xt), bool)]


def _features(x: np.ndarray, name: str) -> np.ndarray:
    """float32 features, images as ``(n, c, h, w)``; uint8 images scaled to [0, 1]."""
    if x.dtype.kind not in "biuf":
        raise _Invalid(f"{name} holds {x.dtype} values; features must be real numbers")
    if x.ndim == 2:
        out = x.astype(np.float32)
    elif x.ndim in (3, 4):
        out = _channels_first(x).astype(np.float32) / np.float32(255.0 if x.dtype == np.uint8 else 1.0)
    else:
        raise _Invalid(f"{name} has shape {x.shape}; expected (n, features), (n, h, w), (n, c, h, w) or (n, h, w, c)")
    _check_finite(out, name)
    return np.ascontiguousarray(out, dtype=np.float32)


def _channels_first(x: np.ndarray) -> np.ndarray:
    """Images with a channel axis after the sample axis."""
    if x.ndim == 3:
        return x[:, None]
    # (n, h, w, c): few channels last behind two image-sized axes (h, w > 4 tells
    # it from a (n, c, h, w) array whose width happens to be 1, 3 or 4).
    if x.shape[-1] in (1, 3, 4) and x.shape[1] > 4 and x.shape[2] > 4:
        return x.transpose(0, 3, 1, 2)
    return x


def _check_finite(x: np.ndarray, name: str, columns: list | None = None) -> None:
    """NaN or infinite features: one error saying how many and where."""
    bad = ~np.isfinite(x.reshape(len(x), -1))
    if not bad.any():
        return
    n_nan = int(np.isnan(x).sum())
    rows = np.flatnonzero(bad.any(axis=1))
    where = f"at samples {_listing(rows)} (0-based)"
    if columns is not None:
        cols = [columns[i] for i in np.flatnonzero(bad.any(axis=0))]
        where += f", in columns {_listing(map(repr, cols))}"
    raise _Invalid(f"{int(bad.sum())} non-finite values ({n_nan} NaN, {int(bad.sum()) - n_nan} infinite) "
                   f"in {name} {where}; drop or fill them")


def _labels(y: np.ndarray, name: str, n: int) -> np.ndarray:
    """One label per sample: integers or text (floats only when whole numbers)."""
    if y.ndim != 1 or len(y) != n:
        raise _Invalid(f"{name} has shape {y.shape}; expected ({n},), one label per sample")
    if y.dtype.kind == "f":
        y = _whole_numbers(y, name)
    elif y.dtype.kind not in "biuUS":
        raise _Invalid(f"{name} holds {y.dtype} values; labels must be integers or text")
    return y


def _whole_numbers(y: np.ndarray, name: str) -> np.ndarray:
    """Float labels as int64; NaN or fractions (a regression target?) are an error."""
    bad = np.flatnonzero(~np.isfinite(y))
    if len(bad):
        raise _Invalid(f"{name} has {len(bad)} missing or infinite labels at samples {_listing(bad)} (0-based)")
    frac = np.flatnonzero(y != np.round(y))
    if len(frac):
        raise _Invalid(f"{name} holds fractional numbers (e.g. {y[frac[0]].item()!r} at sample {frac[0]}); "
                       "labels must be classes: integers or text")
    return y.astype(np.int64)


# --- .parquet and .csv -------------------------------------------------------


def _read_table(p: Path, label: str) -> tuple[np.ndarray, np.ndarray, None]:
    """Numeric feature columns and the ``label`` column of a table."""
    import pandas as pd

    df = pd.read_parquet(p) if p.suffix.lower() == ".parquet" else pd.read_csv(p)
    columns = [str(c) for c in df.columns]
    if label not in columns:
        raise _Invalid(f"no label column {label!r}; columns found: {_listing(map(repr, columns))} "
                       "(data.label names the label column)")
    df.columns = columns
    features = df.drop(columns=[label])
    if features.shape[1] == 0:
        raise _Invalid(f"no feature columns besides the label column {label!r}")
    text = [c for c in features.columns if not (pd.api.types.is_numeric_dtype(features[c])
                                                 or pd.api.types.is_bool_dtype(features[c]))]
    if text:
        raise _Invalid(f"non-numeric feature columns: {_listing(map(repr, text))}; "
                       "encode them as numbers or drop them")
    x = features.to_numpy(dtype=np.float32, na_value=np.nan)
    _check_finite(x, "the feature columns", list(features.columns))
    return x, _table_labels(df[label], label), None


def _table_labels(col, label: str) -> np.ndarray:
    """The label column as integers or text; missing labels are an error."""
    import pandas as pd

    missing = np.flatnonzero(col.isna().to_numpy())
    if len(missing):
        raise _Invalid(f"label column {label!r} has {len(missing)} missing values at rows "
                       f"{_listing(missing)} (0-based, header not counted)")
    if pd.api.types.is_bool_dtype(col) or pd.api.types.is_integer_dtype(col):
        return col.to_numpy(dtype=np.int64)
    if pd.api.types.is_numeric_dtype(col):
        return _labels(col.to_numpy(dtype=np.float64), f"label column {label!r}", len(col))
    # Text (or mixed) labels: compared as text, so they sort in one order.
    return col.astype(str).to_numpy(dtype=str)


# --- image folders ---------------------------------------------------------


def _read_folder(root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Class folders of images under ``root``, or under ``root/train`` and ``root/test``."""
    if (root / "test").is_dir() and not (root / "train").is_dir():
        raise _Invalid("it has a test/ folder but no train/ folder; give both, or class folders only")
    splits = [root / "train", root / "test"] if (root / "train").is_dir() else [root]
    found = [_class_files(s, root) for s in splits if s.is_dir()]
    files = [f for part in found for _, fs in part for f in fs]
    labels = np.array([c for part in found for c, fs in part for _ in fs])
    x = _read_images(files, root)
    if len(found) == 1:
        return x, labels, None
    n_train = sum(len(fs) for _, fs in found[0])
    return x, labels, np.arange(len(files)) >= n_train


def _class_files(folder: Path, root: Path) -> list[tuple[str, list[Path]]]:
    """``(class name, its image files)`` per sub-folder, by name; other files are skipped."""
    classes = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise _Invalid(f"{_rel(folder, root)} has no class folders; expected one sub-folder of images per class")
    out = [(d.name, sorted(f for f in d.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES))
           for d in classes]
    empty = [_rel(folder / c, root) for c, fs in out if not fs]
    if empty:
        raise _Invalid(f"class folders without images: {_listing(empty)} "
                       f"(image files end in {', '.join(sorted(IMAGE_SUFFIXES))})")
    return out


def _rel(p: Path, root: Path) -> str:
    return str(p.relative_to(root)) if p != root else "."


def _read_images(files: list[Path], root: Path) -> np.ndarray:
    """Images of one size as float32 ``(n, c, h, w)`` in [0, 1]: gray ("L")
    when every image has one channel, else RGB."""
    sizes: dict[tuple[int, int], Path] = {}
    gray = True
    for f in files:  # headers only: sizes and modes before any pixel is decoded
        size, mode = _image(f, root, lambda im: (im.size, im.mode))
        sizes.setdefault(size, f)
        gray &= mode in GRAY_MODES
    if len(sizes) > 1:
        (a, fa), (b, fb) = list(sizes.items())[:2]
        raise _Invalid(f"images differ in size: {_rel(fa, root)} is {a[0]}x{a[1]}, {_rel(fb, root)} is "
                       f"{b[0]}x{b[1]} (width x height); resize them to one size")
    mode = "L" if gray else "RGB"
    x = np.stack([_image(f, root, lambda im: np.asarray(im.convert(mode), dtype=np.uint8)) for f in files])
    x = x[:, None] if gray else x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x, dtype=np.float32) / np.float32(255.0)


def _image(f: Path, root: Path, read):
    """``read(image)`` of one image file; a file Pillow cannot open or decode
    (not an image, truncated) is an error naming it."""
    from PIL import Image

    try:
        with Image.open(f) as im:
            return read(im)
    except (OSError, ValueError) as err:  # UnidentifiedImageError is an OSError
        raise _Invalid(f"cannot read image {_rel(f, root)} ({type(err).__name__}: {err})") from None
