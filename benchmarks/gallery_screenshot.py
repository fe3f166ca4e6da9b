"""Take the screenshot of ``seas gallery`` shown in the README (``docs/gallery.png``).

    python benchmarks/gallery_screenshot.py [--out docs/gallery.png] [--data ../shared/data/magnetic-tile]

It builds a stand-in generated folder in a temporary directory, serves it with
:func:`seas.gallery.serve`, makes a few decisions, and photographs the page with headless
Chromium driven by Selenium (Debian: ``apt-get install chromium chromium-driver``;
``pip install selenium``).

The stand-in "generated" pairs are real magnetic-tile photographs and masks, resized to 256 x 256
as SeaS writes them, when the dataset is there (its README asks that it stays outside the
repository: only the screenshot is kept); otherwise synthetic textures with dark blobs. The qc
scores are random numbers. The picture shows the page, not what SeaS generates.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from seas.data.config import DataConfig
from seas.data.readers import Sample
from seas.data.split import Split, write_split
from seas.gallery import serve

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "magnetic-tile"
TYPES = {"blowhole": "MT_Blowhole", "break": "MT_Break", "uneven": "MT_Uneven"}
SIDE = 256  # generated images are square
SHOTS, PER_KIND = 2, 6  # real training pairs and stand-in generated pairs per type
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars")


# ----------------------------------------------------------------------------- source pictures


def magnetic_tile(data: Path) -> tuple[dict[str, list[tuple[Path, Path]]], list[Path]]:
    """(type -> [(image, mask)], normal images) of the dataset, sorted by name."""
    pairs = {kind: [(jpg, jpg.with_suffix(".png")) for jpg in sorted((data / folder / "Imgs").glob("*.jpg"))]
             for kind, folder in TYPES.items()}
    return pairs, sorted((data / "MT_Free" / "Imgs").glob("*.jpg"))


def synthetic(root: Path) -> tuple[dict[str, list[tuple[Path, Path]]], list[Path]]:
    """The same, made up: grey textures, with dark blobs (and their masks) for the anomalies."""
    rng = np.random.default_rng(0)

    def texture(path: Path) -> Path:
        base = 110 + 40 * np.sin(np.linspace(0, 3, SIDE))[None, :] + rng.normal(0, 12, (SIDE, SIDE))
        Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(1)).save(path)
        return path

    root.mkdir(parents=True)
    normals = [texture(root / f"normal_{i}.png") for i in range(4)]
    pairs = {}
    for t, kind in enumerate(TYPES):
        pairs[kind] = []
        for i in range(SHOTS + PER_KIND):
            image, mask = texture(root / f"{kind}_{i}.png"), Image.new("L", (SIDE, SIDE))
            x, y, r = rng.integers(40, SIDE - 40, 2).tolist() + [int(rng.integers(6, 20 + 15 * t))]
            ImageDraw.Draw(mask).ellipse((x - r, y - r // (t + 1), x + r, y + r), fill=255)
            picture = Image.open(image).convert("L")
            picture.paste(40, mask=mask.filter(ImageFilter.GaussianBlur(2)))
            picture.save(image)
            mask.save(root / f"{kind}_{i}_mask.png")
            pairs[kind].append((image, root / f"{kind}_{i}_mask.png"))
    return pairs, normals


# ----------------------------------------------------------------------------- the folders


def write_run(run: Path, pairs: dict, normals: list[Path]) -> None:
    """A run folder holding only split.json: the first SHOTS pairs of each type train."""
    sample = lambda kind, image, mask: Sample(str(image), str(mask) if mask else None, "magnetic-tile", kind, "train")
    train = {kind: [sample(kind, *p) for p in ps[:SHOTS]] for kind, ps in pairs.items()}
    split = Split(types=sorted(pairs), train=train, normal_train=[sample("good", n, None) for n in normals[:4]],
                  test=[], unused_normals=0)
    cfg = DataConfig(root=str(DATA), layout="folder", normal=["MT_Free/Imgs/*.jpg"],
                     anomalies={kind: [f"{folder}/Imgs/*.jpg"] for kind, folder in TYPES.items()})
    run.mkdir(parents=True)
    write_split(split, cfg, run / "split.json")


def square(path: Path, resample) -> Image.Image:
    return Image.open(path).convert("RGB" if resample != Image.NEAREST else "L").resize((SIDE, SIDE), resample)


def write_generated(out: Path, run: Path, pairs: dict, normals: list[Path]) -> None:
    """Stand-in outputs: the pairs after the training shots, as 256 px PNGs, with qc scores."""
    rng = np.random.default_rng(1)
    rows = []
    for kind, kind_pairs in sorted(pairs.items()):
        for index, (image, mask) in enumerate(kind_pairs[SHOTS:SHOTS + PER_KIND]):
            row = {"kind": kind, "index": index, "image": f"{kind}/image/{index:03d}.png",
                   "mask": f"{kind}/mask/{index:03d}.png", "prob": f"{kind}/prob/{index:03d}.png",
                   "prompt": f"a photo of a magnetic tile with a {kind}", "seed": index,
                   "reference": str(normals[index % len(normals)])}
            for field in ("image", "mask", "prob"):
                (out / row[field]).parent.mkdir(parents=True, exist_ok=True)
            square(image, Image.LANCZOS).save(out / row["image"])
            binary = square(mask, Image.NEAREST).point(lambda v: 255 if v >= 128 else 0)
            binary.save(out / row["mask"])
            binary.filter(ImageFilter.GaussianBlur(6)).save(out / row["prob"])
            fidelity = float(rng.uniform(0.3, 0.95))
            row.update(mask_area=float(np.asarray(binary).mean() / 255),
                       qc_status="accepted" if fidelity > 0.45 else "rejected",
                       qc={"fidelity": round(fidelity, 3), "mask_fit": round(float(rng.uniform(0.5, 0.99)), 3)})
            rows.append(row)
    for index, normal in enumerate(normals[4:8]):
        row = {"kind": "good", "index": index, "image": f"good/image/{index:03d}.png", "mask": None,
               "prompt": "a photo of a magnetic tile", "seed": index, "reference": str(normals[index]), "mask_area": None}
        (out / row["image"]).parent.mkdir(parents=True, exist_ok=True)
        square(normal, Image.LANCZOS).save(out / row["image"])
        rows.append(row)
    (out / "manifest.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    kinds = sorted({row["kind"] for row in rows})
    settings = {"format": "seas-generation-1", "run": str(run), "product": "magnetic-tile", "kinds": kinds,
                "num": PER_KIND, "seed": 0, "steps": 25}
    (out / "generation.json").write_text(json.dumps(settings, indent=1))


# ----------------------------------------------------------------------------- the picture


def decide(url: str, key: str, decision: str) -> None:
    body = json.dumps({"key": key, "decision": decision}).encode()
    request = urllib.request.Request(url + "api/decision", data=body, headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=10).read()


def screenshot(url: str, out: Path, profile: Path, size: tuple[int, int]) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in (*FLAGS, f"--window-size={size[0]},{size[1]}", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        driver.get(url)
        deadline = time.monotonic() + 30
        # Wait until every displayed image is decoded and every visible mask outline painted.
        ready = """
            const imgs = [...document.querySelectorAll('img')].filter((i) => i.offsetParent !== null);
            const inView = (e) => e.getBoundingClientRect().top < innerHeight;
            const masks = [...document.querySelectorAll('.thumb[data-mask]')].filter(inView);
            return imgs.length > 0 && imgs.filter(inView).every((i) => i.complete && i.naturalWidth > 0)
                && masks.every((t) => t.classList.contains('painted'));"""
        while not driver.execute_script(ready):
            if time.monotonic() > deadline:
                raise TimeoutError("the page did not finish loading its images")
            time.sleep(0.1)
        ActionChains(driver).send_keys("jj").perform()  # the keyboard focus on the third card
        time.sleep(0.3)
        out.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(out))
    finally:
        driver.quit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "gallery.png", help="PNG to write")
    parser.add_argument("--data", type=Path, default=DATA, help="magnetic-tile folder (synthetic pictures without it)")
    parser.add_argument("--size", default="1400x1000", help="browser window, WIDTHxHEIGHT (default 1400x1000)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="seas-gallery-") as tmp:
        tmp = Path(tmp)
        source = magnetic_tile(args.data) if (args.data / "MT_Free").is_dir() else synthetic(tmp / "synthetic")
        write_run(tmp / "run", *source)
        write_generated(tmp / "generated", tmp / "run", *source)
        with serve(tmp / "generated") as server:
            for key, decision in (("blowhole/0", "accepted"), ("blowhole/1", "rejected"), ("blowhole/3", "accepted")):
                decide(server.url, key, decision)
            width, height = (int(v) for v in args.size.split("x"))
            screenshot(server.url, args.out, tmp / "profile", (width, height))
    print(f"wrote {args.out} ({'magnetic-tile' if (args.data / 'MT_Free').is_dir() else 'synthetic'} pictures)")


if __name__ == "__main__":
    main()
