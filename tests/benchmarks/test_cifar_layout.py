"""benchmarks.cifar_layout: the margin behind the CIFAR-10 reader's layout check, measured on a folder of photos."""

import numpy as np
from PIL import Image

from benchmarks import cifar_layout


def test_a_smooth_photo_reads_far_above_the_limit_planar_and_far_below_interleaved(tmp_path, capsys):
    y, x = np.mgrid[0:96, 0:160]
    photo = np.stack([x * 1.5, y * 2.5, (x + y) % 200], axis=-1).astype(np.uint8)
    Image.fromarray(photo).save(tmp_path / "gradient.png")
    (tmp_path / "notes.txt").write_text("not a photo")

    images = cifar_layout.tiles(tmp_path / "gradient.png")
    assert images.shape == (1 + 6, 32, 32, 3)  # short side 32 (1 tile), 64 (2x3); 128 and 256 would scale it up
    found = cifar_layout.shares(images)
    assert found["planes"][1] > 1.5 and found["pixels"][2] < 0.75

    cifar_layout.main([str(tmp_path)])
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "refused below 0.75: share (single-tile min..max)"
    assert len(out) == 3 and out[2].startswith("gradient.png") and "notes" not in "".join(out)
