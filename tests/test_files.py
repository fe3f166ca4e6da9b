"""The file layer: one way of reading masks everywhere, and atomic writes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from seas.evaluation.downstream import DownstreamConfig, evaluate
from seas.files.atomic import check_file_table, file_table, write_file, write_json
from seas.files.images import as_mask, read_mask


def test_a_0_1_mask_is_a_defect_everywhere(tmp_path):
    """A mask PNG stored as 0/1 (not 0/255) is the same defect for every reader."""
    mask = np.zeros((16, 16), dtype=bool)
    mask[4:9, 5:12] = True
    path = tmp_path / "m.png"
    Image.fromarray(mask.astype(np.uint8)).save(path)  # values 0 and 1
    assert np.array_equal(read_mask(path), mask)  # training, generation references, evaluation
    assert np.array_equal(as_mask(path, mask.shape), mask)  # the downstream segmenters' reader
    assert np.array_equal(as_mask(mask.astype(np.uint8), mask.shape), mask)  # in memory
    assert np.array_equal(read_mask(path, "nonzero"), mask)

    image = np.full((16, 16, 3), 128, dtype=np.uint8)
    defect = image.copy()
    defect[mask] = 250
    cfg = DownstreamConfig(size=16, device="cpu", progress=False)

    class Oracle(torch.nn.Module):  # finds the bright defect: a perfect score iff the mask reads as defect
        def __init__(self):
            super().__init__()
            self.unused = torch.nn.Parameter(torch.zeros(()))  # tells the evaluation the device

        def forward(self, x):
            logits = torch.zeros(x.shape[0], 2, 16, 16)
            logits[:, 1] = (x[:, 0] - x[:, 0].mean(dim=(1, 2), keepdim=True)) * 10  # bright pixels
            return logits

    metrics = evaluate(Oracle(), [(defect, path), (image, None)], cfg)
    assert metrics["pixel_auroc"] == pytest.approx(1.0) and metrics["iou"] == pytest.approx(1.0)


def test_atomic_writes_leave_no_partial_file(tmp_path):
    target = tmp_path / "a.json"
    write_json(target, {"x": 1})

    def broken(tmp):
        tmp.write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError) as err:
        write_file(target, broken)
    assert err.value.filename == str(target)
    assert target.read_text() == '{\n "x": 1\n}' and [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_file_tables_catch_truncated_and_altered_files(tmp_path):
    (tmp_path / "w.bin").write_bytes(b"abcdef")
    table = file_table(tmp_path)
    assert check_file_table(tmp_path, table) is None
    (tmp_path / "w.bin").write_bytes(b"abcxef")
    assert check_file_table(tmp_path, table) == "w.bin altered: checksum differs"
    (tmp_path / "w.bin").write_bytes(b"abc")
    assert check_file_table(tmp_path, table) == "w.bin has 3 bytes, 6 were written"
