"""Tests of neuroplast.data: digits, IDX reader, MNIST loaders, N-MNIST events, encodings."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DATA_ROOT as SHARED  # noqa: E402

from neuroplast.data import Dataset, bin_events, dataset_names, encode, encoding_names, load_dataset, read_events
from neuroplast.data.idx import read_idx, read_idx_pair
from neuroplast.errors import DataError, SpecError, UserError

# ----------------------------------------------------------------------------- digits

def test_dataset_names_and_unknown():
    assert dataset_names() == ["digits", "mnist", "fashion-mnist", "nmnist"]
    with pytest.raises(UserError, match="digits.*mnist.*fashion-mnist.*nmnist"):
        load_dataset("cifar")


def test_digits_shapes_and_splits():
    d = load_dataset("digits")
    assert isinstance(d, Dataset) and d.kind == "static" and d.num_classes == 10
    assert d.input_shape == (1, 8, 8)
    assert (len(d.train), len(d.val), len(d.test)) == (1257, 180, 360)
    assert len(d.train) + len(d.val) + len(d.test) == 1797
    for s in (d.train, d.val, d.test):
        assert s.x.dtype == torch.float32 and s.y.dtype == torch.int64
        assert s.x.shape[1:] == (1, 8, 8)
        assert 0.0 <= float(s.x.min()) and float(s.x.max()) <= 1.0
        assert sorted(s.y.unique().tolist()) == list(range(10))
    assert float(d.train.x.max()) == 1.0  # 16/16
    # the splits partition the same 1797 samples whatever the seed
    def rows(ds):
        x = torch.cat([ds.train.x, ds.val.x, ds.test.x]).reshape(-1, 64) * 16
        y = torch.cat([ds.train.y, ds.val.y, ds.test.y])
        return sorted(map(tuple, torch.cat([x, y[:, None].float()], 1).int().tolist()))
    assert rows(d) == rows(load_dataset("digits", split_seed=5))


def test_digits_split_deterministic():
    a, b, c = (load_dataset("digits", split_seed=s) for s in (0, 0, 1))
    assert torch.equal(a.test.x, b.test.x) and torch.equal(a.train.y, b.train.y)
    assert not torch.equal(a.test.x, c.test.x)
    d = load_dataset("digits", val_fraction=0.0)
    assert (len(d.train), len(d.val), len(d.test)) == (1437, 0, 360)
    assert d.val.x.shape == (0, 1, 8, 8)
    assert torch.equal(d.test.x, a.test.x)  # test split does not depend on val_fraction
    with pytest.raises(UserError, match="val_fraction"):
        load_dataset("digits", val_fraction=1.5)


# ----------------------------------------------------------------------------- IDX

def _idx_bytes(arr: np.ndarray, magic: int | None = None) -> bytes:
    arr = np.asarray(arr, dtype=np.uint8)
    magic = (0x08 << 8 | arr.ndim) if magic is None else magic
    return struct.pack(">I", magic) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def _write_gz(path: Path, data: bytes) -> Path:
    path.write_bytes(gzip.compress(data))
    return path


def test_idx_decode_exact(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    labs = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    pi = _write_gz(tmp_path / "img.gz", _idx_bytes(imgs))
    pl = _write_gz(tmp_path / "lab.gz", _idx_bytes(labs))
    assert struct.unpack(">I", gzip.decompress(pi.read_bytes())[:4])[0] == 2051
    out = read_idx(pi, magic=2051)
    assert out.shape == (5, 28, 28) and out.dtype == np.uint8 and np.array_equal(out, imgs)
    x, y = read_idx_pair(pi, pl, count=5)
    assert np.array_equal(x, imgs) and np.array_equal(y, labs)
    with pytest.raises(DataError, match="expected 6"):
        read_idx_pair(pi, pl, count=6)


def test_idx_corrupt_files(tmp_path):
    imgs = np.arange(2 * 28 * 28, dtype=np.int64).reshape(2, 28, 28) % 256
    good = _idx_bytes(imgs)
    bad_magic = _write_gz(tmp_path / "badmagic.gz", _idx_bytes(imgs, magic=2049))
    with pytest.raises(DataError, match="badmagic.gz.*magic"):
        read_idx(bad_magic, magic=2051)
    truncated = _write_gz(tmp_path / "trunc.gz", good[:-7])
    with pytest.raises(DataError, match="trunc.gz.*payload"):
        read_idx(truncated)
    notgz = tmp_path / "plain.gz"
    notgz.write_bytes(good)
    with pytest.raises(DataError, match="plain.gz.*gzip"):
        read_idx(notgz)
    cut = tmp_path / "cutgz.gz"
    cut.write_bytes(gzip.compress(good)[:100])  # gzip stream ends early
    with pytest.raises(DataError, match="cutgz.gz"):
        read_idx(cut)
    with pytest.raises(DataError, match="missing.*nothere.gz"):
        read_idx(tmp_path / "nothere.gz")
    # image/label count mismatch
    pi = _write_gz(tmp_path / "i.gz", good)
    pl = _write_gz(tmp_path / "l.gz", _idx_bytes(np.array([1, 2, 3])))
    with pytest.raises(DataError, match="2 images.*3 labels"):
        read_idx_pair(pi, pl)


def _fake_mnist_folder(folder: Path, *, skip: str | None = None) -> None:
    folder.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                 "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        if name != skip:
            shape = (1, 28, 28) if "images" in name else (1,)
            _write_gz(folder / name, _idx_bytes(np.zeros(shape)))


def test_mnist_dir_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("NEUROPLAST_DATA", raising=False)
    with pytest.raises(DataError, match="--data-dir DIR.*NEUROPLAST_DATA"):
        load_dataset("mnist")
    _fake_mnist_folder(tmp_path / "mnist", skip="t10k-labels-idx1-ubyte.gz")
    missing = str(tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(DataError, match="t10k-labels") as err:
        load_dataset("mnist", data_dir=tmp_path)
    assert missing in str(err.value) and str(tmp_path) in str(err.value)
    monkeypatch.setenv("NEUROPLAST_DATA", str(tmp_path))
    with pytest.raises(DataError, match="t10k-labels"):
        load_dataset("mnist")
    with pytest.raises(DataError, match="fashion-mnist"):
        load_dataset("fashion-mnist")
    # all four files present but the wrong counts
    _write_gz(tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz", _idx_bytes(np.zeros(1)))
    with pytest.raises(DataError, match="expected 60000"):
        load_dataset("mnist", data_dir=tmp_path / "mnist")


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_mnist_real(name):
    if not (SHARED / name / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"{SHARED / name} not available")
    d = load_dataset(name, data_dir=SHARED)
    assert (len(d.train), len(d.val), len(d.test)) == (60000, 0, 10000)
    assert d.input_shape == (1, 28, 28) and d.train.x.shape == (60000, 1, 28, 28)
    assert d.test.x.shape == (10000, 1, 28, 28)
    assert d.train.y.min() == 0 and d.train.y.max() == 9 and d.test.y.max() == 9
    assert abs(float(d.train.x.mean())) < 1e-4 and abs(float(d.train.x.std()) - 1) < 1e-3
    if name == "mnist":
        assert int(d.train.y[0]) == 5
        raw = load_dataset(name, data_dir=SHARED / name, normalize=False)
        assert float(raw.train.x.min()) == 0.0 and float(raw.train.x.max()) == 1.0
        assert abs(float(raw.train.x.mean()) - 0.1307) < 1e-3
        assert abs(float(raw.train.x.std()) - 0.3081) < 1e-3
        v = load_dataset(name, data_dir=SHARED, val_fraction=0.1, split_seed=3, normalize=False)
        assert (len(v.train), len(v.val)) == (54000, 6000)
        assert torch.equal(torch.sort(torch.cat([v.train.y, v.val.y])).values,
                           torch.sort(raw.train.y).values)


# ----------------------------------------------------------------------------- N-MNIST

def _encode_events(events) -> bytes:
    """Own encoder of the 40-bit N-MNIST format: x, y, p<<7 | t>>16, t & 0xFFFF (big-endian)."""
    out = bytearray()
    for x, y, p, t in events:
        out += bytes([x, y, (p << 7) | (t >> 16)]) + struct.pack(">H", t & 0xFFFF)
    return bytes(out)


EVENTS = [(0, 0, 0, 5), (33, 2, 1, 70_000), (5, 33, 1, 65_536), (7, 7, 0, 299_999),
          (7, 7, 0, 300_000), (7, 7, 1, 8_388_607), (7, 7, 1, 100_000)]


def test_read_events_exact(tmp_path):
    path = tmp_path / "a.bin"
    path.write_bytes(_encode_events(EVENTS))
    ev = read_events(path)
    assert ev.shape == (len(EVENTS), 4)
    assert ev.tolist() == [list(e) for e in EVENTS]
    (tmp_path / "bad.bin").write_bytes(_encode_events(EVENTS)[:-1])
    with pytest.raises(DataError, match="bad.bin.*multiple of 5"):
        read_events(tmp_path / "bad.bin")
    (tmp_path / "oob.bin").write_bytes(_encode_events([(34, 0, 0, 1)]))
    with pytest.raises(DataError, match="oob.bin"):
        read_events(tmp_path / "oob.bin")
    with pytest.raises(DataError, match="missing.*nofile.bs2"):
        read_events(tmp_path / "nofile.bs2")


@pytest.mark.parametrize("name", ["empty.bs2", "empty.bin"])
def test_an_empty_event_file_is_truncated_not_a_sample_without_events(tmp_path, name):
    (tmp_path / name).write_bytes(b"")
    with pytest.raises(DataError, match=rf"{name}: empty file \(0 bytes"):
        read_events(tmp_path / name)


def test_bin_events_by_hand():
    ev = np.array(EVENTS)
    f = bin_events(ev, 3)  # bins of 100 ms
    assert f.shape == (3, 2, 34, 34) and f.dtype == np.float32
    assert f.sum() == 5  # t=300000 and t=8388607 are dropped
    assert f[0, 0, 0, 0] == 1          # (x0,y0) OFF at 5 us
    assert f[0, 1, 2, 33] == 1         # (x33,y2) ON at 70 ms -> [t, p, y, x]
    assert f[0, 1, 33, 5] == 1         # t = 65536
    assert f[2, 0, 7, 7] == 1          # 299999 -> last bin
    assert f[1, 1, 7, 7] == 1          # 100000 -> second bin
    assert bin_events(ev, 1).sum() == 5
    g = bin_events(np.array([(1, 1, 1, 10)] * 4), 2)
    assert g[0, 1, 1, 1] == 4 and g.sum() == 4
    with pytest.raises(UserError):
        bin_events(ev, 0)


def test_nmnist_full_layout(tmp_path):
    root = tmp_path / "N-MNIST"
    (root / "Train" / "3").mkdir(parents=True)
    (root / "Test" / "7").mkdir(parents=True)
    (root / "Train" / "3" / "x.bin").write_bytes(_encode_events(EVENTS))
    (root / "Test" / "7" / "y.bin").write_bytes(_encode_events([(1, 2, 1, 150_000)]))
    with pytest.raises(UserError, match="time_steps"):
        load_dataset("nmnist", data_dir=tmp_path)
    d = load_dataset("nmnist", data_dir=tmp_path, time_steps=3)
    assert d.kind == "events" and d.input_shape == (2, 34, 34)
    assert d.train.x.shape == (1, 3, 2, 34, 34) and d.test.x.shape == (1, 3, 2, 34, 34)
    assert d.train.y.tolist() == [3] and d.test.y.tolist() == [7]
    assert torch.equal(d.train.x[0], torch.from_numpy(bin_events(np.array(EVENTS), 3)))
    assert d.test.x[0, 1, 1, 2, 1] == 1 and d.test.x.sum() == 1
    with pytest.raises(DataError, match="N-MNIST"):
        load_dataset("nmnist", data_dir=tmp_path / "N-MNIST" / "Train", time_steps=3)


def _read_list(path: Path) -> list[tuple[int, int]]:
    rows = [ln.split() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    return [(int(a), int(b)) for a, b in rows]


def test_nmnist_small_real():
    small = SHARED / "nmnist-small"
    if not (small / "train1K.txt").is_file():
        pytest.skip(f"{small} not available")
    d = load_dataset("nmnist", data_dir=SHARED, time_steps=10)
    assert (len(d.train), len(d.val), len(d.test)) == (1000, 0, 100)
    assert d.train.x.shape == (1000, 10, 2, 34, 34) and d.test.x.shape == (100, 10, 2, 34, 34)
    assert d.train.y.tolist() == [b for _, b in _read_list(small / "train1K.txt")]
    assert d.test.y.tolist() == [b for _, b in _read_list(small / "test100.txt")]
    assert (d.train.x.sum(dim=(2, 3, 4)) > 0).all()  # every frame holds events
    assert d.train.y[0] == 5
    first = bin_events(read_events(small / "1.bs2"), 10)
    assert torch.equal(d.train.x[0], torch.from_numpy(first))
    v = load_dataset("nmnist", data_dir=small, time_steps=2, val_fraction=0.2)
    assert (len(v.train), len(v.val)) == (800, 200)


# ----------------------------------------------------------------------------- encode

def test_encode_direct_is_view():
    x = torch.rand(4, 1, 8, 8)
    e = encode("direct", x, 5)
    assert e.shape == (5, 4, 1, 8, 8) and e.stride(0) == 0
    assert e.data_ptr() == x.data_ptr()
    assert all(torch.equal(e[t], x) for t in range(5))


def test_encode_poisson_rate_and_seed():
    x = torch.tensor([[0.0, 0.25, 0.5, 1.0, 1.7, -0.3]])
    g = torch.Generator().manual_seed(7)
    e = encode("poisson", x, 4000, generator=g)
    assert e.shape == (4000, 1, 6) and e.dtype == torch.float32
    assert set(e.unique().tolist()) <= {0.0, 1.0}
    rate = e.mean(dim=0)[0]
    assert torch.allclose(rate, x[0].clamp(0, 1), atol=0.03)
    assert rate[0] == 0 and rate[3] == 1 and rate[5] == 0
    e2 = encode("poisson", x, 4000, generator=torch.Generator().manual_seed(7))
    assert torch.equal(e, e2)
    e3 = encode("poisson", x, 4000, generator=torch.Generator().manual_seed(8))
    assert not torch.equal(e, e3)


def test_encode_frames_and_errors():
    x = torch.rand(3, 6, 2, 34, 34)
    e = encode("frames", x, 6)
    assert e.shape == (6, 3, 2, 34, 34) and torch.equal(e[2, 1], x[1, 2])
    with pytest.raises(SpecError, match="6 time bins.*4 time steps"):
        encode("frames", x, 4)
    assert encoding_names() == ["direct", "poisson", "frames"]
    with pytest.raises(UserError, match="direct, poisson, frames"):
        encode("rate", x, 4)
    with pytest.raises(SpecError):
        encode("direct", torch.rand(5), 4)
    with pytest.raises(SpecError):
        encode("frames", torch.rand(5, 4), 4)


def test_runs_take_normalised_images_only_for_float_direct_input(monkeypatch):
    """Poisson rates and frame counts need intensities in [0, 1] (normalised MNIST would saturate the rate
    code: every pixel above the mean spikes at every step), and so do on-chip payloads."""
    from neuroplast import runs
    from neuroplast.cli import main
    from neuroplast.data import normalizes
    assert normalizes("direct") and not normalizes("poisson") and not normalizes("frames")
    assert not normalizes("direct", "loihi2")
    seen, real = [], runs.load_dataset   # every command loads a run's data through runs.load_data

    def spy(*args, **kw):
        seen.append(kw.get("normalize", True))
        return real(*args, **kw)
    monkeypatch.setattr(runs, "load_dataset", spy)
    for enc in ("direct", "poisson"):
        assert main(["train", "--net", "64-16-10", "--epochs", "1", "--encoding", enc, "--no-progress"]) == 0
    assert seen == [True, False]


def test_batches_on_another_device_gather_there_in_the_same_order():
    """With ``device``, a pass moves the split and its shuffled order there once and gathers each batch
    there (no copy per batch); the order is the CPU generator's, so it is the same on every device."""
    from neuroplast.data.datasets import Split
    from neuroplast.runs import batches
    split = Split(torch.arange(10, dtype=torch.float32)[:, None], torch.arange(10))
    cpu = [y for _, y in batches(split, 4, generator=torch.Generator().manual_seed(3))]
    meta = list(batches(split, 4, generator=torch.Generator().manual_seed(3), device="meta"))
    assert [tuple(x.shape) for x, _ in meta] == [(4, 1), (4, 1), (2, 1)]
    assert all(x.device.type == "meta" and y.device.type == "meta" for x, y in meta)
    assert sorted(torch.cat(cpu).tolist()) == list(range(10)) and cpu[0].tolist() != [0, 1, 2, 3]
    same = list(batches(split, 4, generator=torch.Generator().manual_seed(3), device="cpu"))
    assert all(torch.equal(a, y) for a, (_, y) in zip(cpu, same))
