"""(5) DETONATE-format data: formats, and a corrupt row is named."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from tipai_core.auditor.data import DatasetRowError, PreferencePairs, write_pairs_parquet
from tipai_core.testing.auditor_synthetic import make_pairs


def test_parquet_pairs_round_trip(tmp_path):
    rows = make_pairs(3, seed=0, size=32)
    ds = PreferencePairs(write_pairs_parquet(tmp_path / "p.parquet", rows))
    assert len(ds) == 3 and ds.has_masks and ds.categories() == sorted({r["Category"] for r in rows})
    item = ds[1]
    assert item.prompt == rows[1]["Prompt"] and item.category == rows[1]["Category"]
    assert torch.allclose(item.chosen, rows[1]["Chosen"], atol=1 / 255 + 1e-6)
    assert torch.equal(item.mask > 0.5, rows[1]["Mask"] > 0.5)
    assert PreferencePairs(tmp_path / "p.parquet", image_size=16)[0].rejected.shape == (3, 16, 16)


def test_corrupt_row_names_the_row(tmp_path):
    path = write_pairs_parquet(tmp_path / "p.parquet", make_pairs(5, seed=0, size=32))
    df = pd.read_parquet(path)
    df.at[3, "Rejected"] = {"bytes": b"\x89PNG this is not an image", "path": None}
    df.to_parquet(path)
    ds = PreferencePairs(path)
    ds[2]  # the rows around it still read
    with pytest.raises(DatasetRowError, match=r"row 3 .*'Rejected'"):
        ds[3]


def test_folder_with_csv_and_image_paths(tmp_path):
    from PIL import Image

    (tmp_path / "img").mkdir()
    Image.new("RGB", (8, 8), (255, 0, 0)).save(tmp_path / "img" / "a.png")
    Image.new("RGB", (8, 8), (0, 0, 255)).save(tmp_path / "img" / "b.png")
    pd.DataFrame(
        {
            "prompt": ["a red square", ""],
            "chosen": ["img/a.png", "img/a.png"],
            "rejected": ["img/b.png", "img/missing.png"],
            "category": ["nsfw", "logo"],
        }
    ).to_csv(tmp_path / "pairs.csv", index=False)
    ds = PreferencePairs(tmp_path)
    assert ds[0].chosen[0].mean() == pytest.approx(1.0) and ds[0].rejected[2].mean() == pytest.approx(1.0)
    with pytest.raises(DatasetRowError, match="row 1 .*Prompt"):
        ds[1]
    with pytest.raises(DatasetRowError, match="row 1 .*missing.png"):
        ds._image(1, "Rejected")


def test_missing_columns_and_sources(tmp_path):
    pd.DataFrame({"Prompt": ["x"], "Chosen": [b""]}).to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match=r"\['Rejected', 'Category'\]"):
        PreferencePairs(tmp_path / "bad.parquet")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        PreferencePairs(tmp_path / "nowhere")


def test_images_of_any_size_and_mode_decode_to_rgb(tmp_path):
    import io

    import numpy as np
    from PIL import Image

    def png(img):
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        return {"bytes": buf.getvalue(), "path": None}

    half_red = np.zeros((20, 50, 4), dtype=np.uint8)
    half_red[..., 0], half_red[..., 3] = 255, 128  # red at alpha 128/255
    grey16 = np.full((31, 17), 32768, dtype=np.uint16)  # mid grey in 16 bits
    palette = Image.new("P", (9, 70), 0)
    palette.putpalette([0, 0, 255] + [0] * 765)
    cells = {
        "RGBA": png(Image.fromarray(half_red, "RGBA")),
        "L": png(Image.new("L", (13, 7), 64)),
        "I;16": png(Image.fromarray(grey16)),
        "P": png(palette),
    }
    pd.DataFrame(
        {
            "Prompt": ["x"] * 4,
            "Chosen": list(cells.values()),
            "Rejected": list(cells.values()),
            "Category": ["nsfw"] * 4,
        }
    ).to_parquet(tmp_path / "modes.parquet")
    ds = PreferencePairs(tmp_path / "modes.parquet", image_size=24)
    rgba, grey, g16, pal = (ds[i].chosen for i in range(4))
    assert all(t.shape == (3, 24, 24) for t in (rgba, grey, g16, pal))
    a = 128 / 255  # composited over white
    assert torch.allclose(rgba[:, 12, 12], torch.tensor([1.0, 1 - a, 1 - a]), atol=1e-3)
    assert torch.allclose(grey[:, 3, 3], torch.full((3,), 64 / 255), atol=1e-3)
    assert torch.allclose(g16[:, 5, 5], torch.full((3,), 32768 / 65535), atol=1e-3)  # not clipped to white
    assert torch.allclose(pal[:, 5, 5], torch.tensor([0.0, 0.0, 1.0]), atol=1e-3)
    assert ds[0].rejected.shape == (3, 24, 24)
    assert PreferencePairs(tmp_path / "modes.parquet")[2].chosen.shape == (3, 31, 17)  # native size kept


def test_image_paths_must_stay_inside_the_dataset_folder(tmp_path, monkeypatch):
    # an absolute path, ".." out of the folder or a symlink leading out makes the row corrupt; the file
    # it names is never opened (it is a valid image: read, it would have been used)
    from PIL import Image

    from tipai_core.auditor.data import inside, read_pairs

    data = tmp_path / "set"
    (data / "img").mkdir(parents=True)
    outside = tmp_path / "secret.png"
    Image.new("RGB", (8, 8), (255, 0, 0)).save(outside)
    Image.new("RGB", (8, 8), (0, 0, 255)).save(data / "img" / "ok.png")
    (data / "img" / "link.png").symlink_to(outside)
    names = ["img/ok.png", "img/../img/ok.png", "../secret.png", str(outside), "img/link.png", "img/../../secret.png"]
    pd.DataFrame(
        {
            "Prompt": ["x"] * len(names),
            "Chosen": names,
            "Rejected": ["img/ok.png"] * len(names),
            "Category": ["nsfw"] * len(names),
        }
    ).to_csv(data / "pairs.csv", index=False)
    opened = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda fp, *a, **k: opened.append(str(fp)) or real_open(fp, *a, **k))
    ds = PreferencePairs(data)
    skipped = []
    items = read_pairs(ds, list(range(len(ds))), skipped=skipped)
    assert [it.index for it in items] == [0, 1] and [s.index for s in skipped] == [2, 3, 4, 5]
    assert "'../secret.png' leads outside the dataset folder" in skipped[0].reason
    assert "is not relative to the dataset folder" in skipped[1].reason
    assert "'img/link.png' leads outside" in skipped[2].reason
    assert all("secret" not in p for p in opened), opened
    with pytest.raises(DatasetRowError, match=r"row 2 .*'Chosen'.*outside the dataset folder"):
        read_pairs(ds, [2], strict=True)
    assert inside(data, "img/ok.png") == (data / "img" / "ok.png").resolve()
    for bad in ("/etc/passwd", "..", "../set2/x.png", "img/\x00.png"):
        with pytest.raises(ValueError, match="dataset folder"):
            inside(data, bad)


def test_unreadable_table_files_name_the_file(tmp_path):
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(ValueError, match=r"bad.parquet could not be read as parquet"):
        PreferencePairs(tmp_path / "bad.parquet")
    (tmp_path / "pairs.txt").write_text("x")
    with pytest.raises(ValueError, match="unsupported pairs file"):
        PreferencePairs(tmp_path / "pairs.txt")
