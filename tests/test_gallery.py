"""``seas gallery``: the catalog, the file guard, the curation file, and the page in a real browser.

A small generated folder is written by hand (PNGs, masks, manifest.jsonl, generation.json) with
a run folder whose record holds the split (:class:`seas.run.Run`). The browser test
drives headless Chromium through Selenium; its fixture installs Debian's ``chromium`` and
``chromium-driver`` when /usr/bin/chromedriver is missing (skipping only if that fails).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import quote

import numpy as np
import pytest
from PIL import Image

from seas.config import TrainConfig
from seas.data.config import DataConfig
from seas.data.readers import Sample
from seas.data.split import Split
from seas.errors import RunError
from seas.gallery import DEFAULT_HOST, DEFAULT_PORT, serve
from seas.generation.curation import CURATION, accepted_keys, read_curation
from seas.model.prompts import PromptSpec
from seas.run import Run

SIZE = (48, 32)  # (width, height)
KINDS = ["dent", "good", "scratch"]  # as generation.json lists them (sorted labels)
COUNTS = {"dent": 2, "good": 2, "scratch": 3}
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM = Path("/usr/bin/chromium")


# ----------------------------------------------------------------------------- a generated folder


def write_png(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def noise(seed: int, size=SIZE) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)


def box_mask(x0: int, y0: int, x1: int, y1: int, size=SIZE, value: int = 255) -> np.ndarray:
    mask = np.zeros((size[1], size[0]), dtype=np.uint8)
    mask[y0:y1, x0:x1] = value
    return mask


def make_run(root: Path) -> Path:
    """A dataset and a run folder holding its record (split included, as ``seas train`` writes it)."""
    data = root / "data"
    samples = {"dent": [], "scratch": []}
    for kind, seed in (("dent", 100), ("scratch", 200)):
        for i in range(2):
            image = write_png(data / kind / f"{i:03d}.png", noise(seed + i))
            mask = write_png(data / kind / f"{i:03d}_mask.png", box_mask(4 + 8 * i, 6, 20 + 8 * i, 20))
            samples[kind].append(Sample(str(image), str(mask), "widget", kind, "test"))
    normals = [Sample(str(write_png(data / "good" / f"{i:03d}.png", noise(300 + i))), None, "widget", "good", "train")
               for i in range(3)]
    cfg = DataConfig(root=str(data), layout="folder", normal=["good/*.png"],
                     anomalies={"dent": ["dent/*.png"], "scratch": ["scratch/*.png"]}, mask="{parent}/{stem}_mask.png")
    split = Split(types=["dent", "scratch"], train={k: v[:1] for k, v in samples.items()}, normal_train=normals,
                  test=samples["dent"][1:] + samples["scratch"][1:], unused_normals=0)
    run = root / "run"
    run.mkdir()
    Run(path=run, base="tiny", data=cfg, train=TrainConfig(base="tiny"), prompt=PromptSpec(split.types),
        split=split).save()
    return run


def make_generated(root: Path, run: Path) -> Path:
    """A ``seas generate`` folder: dent 0-1, good 0-1, scratch 0-2, qc scores, one probability map."""
    out = root / "generated"
    rows = []
    references = sorted((root / "data" / "good").glob("*.png"))
    for kind in KINDS:
        for i in range(COUNTS[kind]):
            image = f"{kind}/image/{i:03d}.png"
            write_png(out / image, noise(1000 * KINDS.index(kind) + i))
            row = {"kind": kind, "index": i, "image": image, "mask": None, "prompt": f"a photo of a {kind} widget",
                   "seed": i, "reference": str(references[i % len(references)]), "mask_area": None, "steps": 25}
            if kind != "good":
                row["mask"] = f"{kind}/mask/{i:03d}.png"
                mask = box_mask(6 + 4 * i, 8, 18 + 6 * i, 24)
                write_png(out / row["mask"], mask)
                row["mask_area"] = float((mask > 0).mean())
                row["qc"] = {"fidelity": 0.5 + 0.1 * i, "mask_fit": 0.9 - 0.2 * i}
                row["qc_status"] = "accepted" if i == 0 else "rejected"
            rows.append(row)
    prob = (np.linspace(0, 255, SIZE[0])[None, :] * np.ones((SIZE[1], 1))).astype(np.uint8)
    rows[-2]["prob"] = "scratch/prob/001.png"  # scratch 1
    write_png(out / rows[-2]["prob"], prob)
    (out / "manifest.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    settings = {"format": "seas-generation-1", "run": str(run), "product": "widget", "kinds": KINDS, "num": 3,
                "seed": 0, "steps": 25}
    (out / "generation.json").write_text(json.dumps(settings, indent=1))
    return out


@pytest.fixture
def folder(tmp_path) -> SimpleNamespace:
    run = make_run(tmp_path)
    return SimpleNamespace(root=tmp_path, run=run, generated=make_generated(tmp_path, run))


@pytest.fixture
def gallery(folder):
    with serve(folder.generated) as server:
        yield SimpleNamespace(**vars(folder), server=server, url=server.url)


# ----------------------------------------------------------------------------- HTTP helpers


def get(url: str, headers: dict | None = None) -> tuple[int, bytes, dict]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as err:
        return err.code, err.read(), dict(err.headers)


def post(url: str, body, headers: dict | None = None) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="POST",
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def file_url(base: str, path: str) -> str:
    return f"{base}file?path={quote(path, safe='')}"


def decide(base: str, key: str, decision: str) -> tuple[int, dict]:
    return post(base + "api/decision", {"key": key, "decision": decision})


def curation_file(folder: Path) -> dict:
    """The curation file, which must be valid JSON of the documented format."""
    data = json.loads((folder / CURATION).read_text())
    assert data["format"] == "seas-curation-1"
    return data["decisions"]


# ----------------------------------------------------------------------------- catalog and files


def test_catalog_lists_rows_real_pairs_and_scores(gallery):
    status, body, headers = get(gallery.url + "api/catalog")
    assert status == 200 and headers["Content-Type"] == "application/json"
    catalog = json.loads(body)
    assert catalog["kinds"] == KINDS
    assert [i["key"] for i in catalog["items"]] == [f"{k}/{i}" for k in KINDS for i in range(COUNTS[k])]
    assert catalog["qc_names"] == ["fidelity", "mask_fit"]
    assert catalog["real_error"] is None
    assert [len(catalog["real"][k]) for k in KINDS] == [1, 3, 1]  # one shot per type; the normal images
    assert catalog["decisions"] == {}
    scratch1 = next(i for i in catalog["items"] if i["key"] == "scratch/1")
    assert scratch1["prob"] and scratch1["reference"] and scratch1["qc_status"] == "rejected"
    # Every URL the catalog hands out serves an image.
    urls = [i[f] for i in catalog["items"] for f in ("image", "mask", "prob", "reference") if i[f]]
    urls += [p[f] for pairs in catalog["real"].values() for p in pairs for f in ("image", "mask") if p[f]]
    for url in urls:
        status, body, headers = get(gallery.url.rstrip("/") + url)
        assert status == 200 and headers["Content-Type"] == "image/png" and body.startswith(b"\x89PNG")


def test_page_and_its_script_come_from_the_package(gallery):
    status, page, headers = get(gallery.url)
    assert status == 200 and b"SeaS gallery" in page
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert b"http://" not in page and b"https://" not in page  # nothing from a CDN
    for name in ("gallery.js", "gallery.css"):
        status, body, _ = get(gallery.url + "static/" + name)
        assert status == 200 and body and b"https://" not in body
    assert get(gallery.url + "static/server.py")[0] == 404
    assert get(gallery.url + "static/..%2Fserver.py")[0] == 404


def test_files_outside_the_listing_are_refused(gallery):
    folder = gallery.generated
    secret = write_png(gallery.root / "secret.png", noise(9))
    (folder / "scratch" / "image" / "009.png").symlink_to(secret)  # a link out of the folder
    rows = [{"kind": "scratch", "index": 9, "image": "scratch/image/009.png", "mask": None},
            {"kind": "dent", "index": 7, "image": "../secret.png", "mask": None},
            {"kind": "dent", "index": 8, "image": str(secret), "mask": None},
            {"kind": "dent", "index": 9, "image": "generation.json", "mask": None}]
    with open(folder / "manifest.jsonl", "a") as fh:
        fh.write("".join(json.dumps(row) + "\n" for row in rows))
    base = gallery.url
    for path in ["../../etc/passwd", "/etc/passwd", "../secret.png", str(secret), "manifest.jsonl",
                 "scratch/image/../../../secret.png", "scratch/image/000.png/../../../secret.png",
                 str(folder / "scratch" / "image" / "000.png"), "", "%2e%2e/secret.png"]:
        status, body, _ = get(file_url(base, path))
        assert status in (403, 404), path
        assert not body.startswith(b"\x89PNG")
    # Listed by the (tampered) manifest, but resolving outside the folder or not an image: 403.
    for path in ["scratch/image/009.png", "../secret.png", str(secret), "generation.json"]:
        assert get(file_url(base, path))[0] == 403, path
    assert get(base + "file?path=" + quote("../../etc/passwd"))[0] == 404
    assert get(base + "file")[0] == 404
    assert get(base + "../../etc/passwd")[0] == 404
    # Listed and inside: served.
    assert get(file_url(base, "scratch/image/000.png"))[0] == 200


def test_foreign_host_and_origin_are_refused(gallery):
    assert get(gallery.url + "api/catalog", {"Host": "evil.example:80"})[0] == 403
    status, _ = post(gallery.url + "api/decision", {"key": "dent/0", "decision": "accepted"},
                     {"Origin": "http://evil.example"})
    assert status == 403
    status, _ = post(gallery.url + "api/decision", b'{"key": "dent/0", "decision": "accepted"}',
                     {"Content-Type": "text/plain"})
    assert status == 415
    assert not (gallery.generated / CURATION).exists()


def test_bad_decisions_are_refused(gallery):
    assert decide(gallery.url, "dent/5", "accepted")[0] == 404  # not in the manifest
    assert decide(gallery.url, "dent/0", "maybe")[0] == 400
    assert post(gallery.url + "api/decision", b"not json")[0] == 400
    assert post(gallery.url + "api/decision", [1, 2])[0] == 400
    assert not (gallery.generated / CURATION).exists()


def test_bad_folder_is_one_line_run_error(tmp_path):
    with pytest.raises(RunError, match="no such folder") as err:
        serve(tmp_path / "missing")
    assert str(tmp_path / "missing") in str(err.value) and "\n" not in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunError, match="no manifest.jsonl") as err:
        serve(tmp_path / "empty")
    assert "seas generate" in str(err.value) and "\n" not in str(err.value)
    (tmp_path / "empty" / "generated").mkdir()
    (tmp_path / "empty" / "generated" / "manifest.jsonl").write_text("")
    with pytest.raises(RunError, match="pass that folder"):  # a run folder: points to run/generated
        serve(tmp_path / "empty")


def test_unreadable_split_shows_no_real_pairs(folder):
    shutil.rmtree(folder.run)
    with serve(folder.generated) as server:
        catalog = json.loads(get(server.url + "api/catalog")[1])
    assert catalog["real"] == {} and "no such folder" in catalog["real_error"]
    assert len(catalog["items"]) == sum(COUNTS.values())


def test_add_arguments_defaults():
    import argparse

    from seas.cli.review import add_gallery_arguments

    args = add_gallery_arguments(argparse.ArgumentParser()).parse_args([])
    assert (args.host, args.port) == ("127.0.0.1", 8765) == (DEFAULT_HOST, DEFAULT_PORT)  # the server's too
    assert add_gallery_arguments(argparse.ArgumentParser()).parse_args(["--port", "0"]).port == 0


def test_run_gallery_prints_its_address_and_stops_on_ctrl_c(folder):
    import signal
    import sys

    # a shell that starts the suite in the background (``cmd &``) makes its children ignore
    # SIGINT, and Python then never raises KeyboardInterrupt: give the child the terminal's default
    code = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
            "from seas.gallery import run_gallery; run_gallery(sys.argv[1], port=0)")
    process = subprocess.Popen([sys.executable, "-c", code, str(folder.generated)], stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert str(folder.generated) in line and "http://127.0.0.1:" in line
        url = line.split(" at ", 1)[1].split()[0]
        assert get(url)[0] == 200
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) == 0
    finally:
        process.kill()
        process.wait()


def test_ctrl_c_while_the_address_is_printed_stops_cleanly(folder, monkeypatch):
    """Ctrl-C can arrive before the address line is finished (seen under load): no traceback,
    the server is shut down."""
    import builtins

    from seas.gallery import server as server_module

    started = []
    real_serve = server_module.serve

    def recording_serve(*args, **kwargs):  # keeps the server so the test can see it stopped
        started.append(real_serve(*args, **kwargs))
        return started[-1]

    monkeypatch.setattr(server_module, "serve", recording_serve)

    def interrupted_print(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(builtins, "print", interrupted_print)
    try:
        server_module.run_gallery(folder.generated, port=0)  # returns instead of raising
    except KeyboardInterrupt:  # caught here: escaping, it would stop the whole test session
        pytest.fail("Ctrl-C during the address line escaped run_gallery")
    finally:
        monkeypatch.undo()
    started[0].thread.join(timeout=5)
    assert not started[0].thread.is_alive()


def test_server_binds_loopback_by_default(folder):
    with serve(folder.generated) as server:
        assert server.httpd.server_address[0] == "127.0.0.1"
        assert server.url.startswith("http://127.0.0.1:")


# ----------------------------------------------------------------------------- curation


def test_two_tabs_keep_each_others_decisions(gallery):
    folder, base = gallery.generated, gallery.url
    assert accepted_keys(folder) is None and read_curation(folder) == {}
    tab_a = [("dent/0", "accepted"), ("scratch/1", "rejected"), ("dent/0", "undecided"), ("good/1", "accepted")]
    tab_b = [("scratch/0", "accepted"), ("good/0", "rejected"), ("scratch/2", "accepted"), ("scratch/0", "rejected")]
    expected = {}
    for (key_a, dec_a), (key_b, dec_b) in zip(tab_a, tab_b):  # interleaved: a, b, a, b, ...
        for key, decision in ((key_a, dec_a), (key_b, dec_b)):
            status, reply = decide(base, key, decision)
            assert status == 200
            if decision == "undecided":
                expected.pop(key, None)
            else:
                expected[key] = decision
            assert reply["decisions"] == expected  # the reply carries the other tab's decisions
            assert curation_file(folder) == expected  # valid JSON after every request
    assert read_curation(folder) == {("scratch", 1): "rejected", ("good", 1): "accepted",
                                     ("scratch", 0): "rejected", ("good", 0): "rejected",
                                     ("scratch", 2): "accepted"}
    assert accepted_keys(folder) == {("good", 1), ("scratch", 2)}
    assert json.loads(get(base + "api/curation")[1])["decisions"] == expected
    assert not list(folder.glob(".curation.json.*.tmp"))


def test_concurrent_decisions_are_all_kept(gallery):
    keys = [f"{k}/{i}" for k in KINDS for i in range(COUNTS[k])]
    barrier = threading.Barrier(len(keys))
    results = []

    def worker(key: str) -> None:
        barrier.wait()
        results.append(decide(gallery.url, key, "accepted")[0])

    threads = [threading.Thread(target=worker, args=(key,)) for key in keys]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * len(keys)
    assert curation_file(gallery.generated) == {key: "accepted" for key in keys}


def test_damaged_curation_file_is_never_overwritten(gallery):
    (gallery.generated / CURATION).write_text("{not json")
    status, reply = decide(gallery.url, "dent/0", "accepted")
    assert status == 409 and "curation.json" in reply["error"]
    assert (gallery.generated / CURATION).read_text() == "{not json"
    with pytest.raises(RunError, match="not valid JSON"):
        accepted_keys(gallery.generated)


# ----------------------------------------------------------------------------- the page in Chromium


@pytest.fixture(scope="session")
def chromedriver() -> Path:
    """/usr/bin/chromedriver, installed with apt-get when missing (skip when that fails)."""
    pytest.importorskip("selenium", reason="selenium is missing: pip install -e '.[test]'")
    if not CHROMEDRIVER.exists():
        command = "apt-get update && apt-get install -y chromium chromium-driver"
        try:
            done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=900,
                                  env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        except (OSError, subprocess.TimeoutExpired) as err:
            pytest.skip(f"headless Chromium is not installed and '{command}' failed: {err}")
        if done.returncode != 0 or not CHROMEDRIVER.exists():
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            pytest.skip(f"headless Chromium is not installed and '{command}' failed: {tail[0]}")
    return CHROMEDRIVER


@pytest.fixture(scope="module")
def browser(chromedriver, tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_AVOID_STATS", "true")  # no usage statistics from Selenium
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1400,1400",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(chromedriver)), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def wait_for(condition, timeout: float = 10.0, what: str = "condition"):
    """Poll ``condition()`` until it returns a true value; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


# Every displayed <img> scrolled into view, then the src of those not (yet) decoded.
BROKEN_IMAGES = """
const shown = [...document.querySelectorAll('img')].filter((img) => img.offsetParent !== null);
shown.forEach((img) => img.scrollIntoView({block: 'nearest'}));
return shown.filter((img) => !(img.complete && img.naturalWidth > 0)).map((img) => img.src);
"""
COUNT_IMAGES = "return [...document.querySelectorAll('img')].filter((i) => i.offsetParent !== null).length;"
# Mask canvases of thumbnails that have at least one painted pixel.
PAINTED = """
return [...document.querySelectorAll('.thumb[data-mask] canvas')].filter((c) => {
  if (!c.width) return false;
  const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  for (let i = 3; i < data.length; i += 4) if (data[i] > 0) return true;
  return false;
}).length;
"""


def press(browser, *keys) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    for key in keys:
        ActionChains(browser).send_keys(key).perform()


def test_browser_curation_with_the_keyboard(gallery, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    folder = gallery.generated
    browser.get(gallery.url)
    n_items = sum(COUNTS.values())
    wait_for(lambda: len(browser.find_elements(By.CSS_SELECTOR, ".card")) == n_items, what="the cards")
    assert [s.get_attribute("data-kind") for s in browser.find_elements(By.CSS_SELECTOR, "section.kind")] == KINDS

    # Every visible image decodes: generated images and the real pairs beside them.
    assert browser.execute_script(COUNT_IMAGES) == n_items + 5
    wait_for(lambda: not browser.execute_script(BROKEN_IMAGES), what="every image to load")
    n_masks = COUNTS["dent"] + COUNTS["scratch"] + 2  # generated masks, and the real ones of dent, scratch
    wait_for(lambda: browser.execute_script(PAINTED) == n_masks, what="the mask outlines")
    assert not browser.find_elements(By.CSS_SELECTOR, ".message")  # no warning: the split was read

    # Page order: dent/0 dent/1 good/0 good/1 scratch/0 scratch/1 scratch/2; a and r advance.
    press(browser, "a", "r", "j", "a", "k", "u", Keys.ARROW_RIGHT, "r")
    expected = {"dent/0": "accepted", "dent/1": "rejected", "scratch/0": "rejected"}
    wait_for(lambda: (folder / CURATION).is_file() and curation_file(folder) == expected, what="curation.json")
    card = browser.find_element(By.CSS_SELECTOR, '.card[data-key="scratch/1"]')
    assert "focused" in card.get_attribute("class")
    assert "rejected" in browser.find_element(By.CSS_SELECTOR, '.card[data-key="dent/1"]').get_attribute("class")
    browser.save_screenshot(str(gallery.root / "gallery.png"))

    # The detail view of scratch/1: image, mask, reference and probability map; accept it there.
    press(browser, Keys.ENTER)
    wait_for(lambda: browser.execute_script("return document.getElementById('detail').open"), what="the detail")
    figures = browser.find_elements(By.CSS_SELECTOR, "#detail-figures figure")
    assert len(figures) == 4
    wait_for(lambda: not browser.execute_script(BROKEN_IMAGES), what="the detail images")
    assert "mask_fit" in browser.find_element(By.ID, "detail-table").text
    press(browser, "a")
    wait_for(lambda: curation_file(folder).get("scratch/1") == "accepted", what="the decision in the detail")
    browser.save_screenshot(str(gallery.root / "gallery-detail.png"))
    press(browser, Keys.ESCAPE)
    wait_for(lambda: not browser.execute_script("return document.getElementById('detail').open"), what="closing")

    # The views: image only, then mask only (the canvases turn opaque), then back.
    press(browser, "v")
    assert "view-image" in browser.find_element(By.TAG_NAME, "body").get_attribute("class")
    press(browser, "v")
    assert "view-mask" in browser.find_element(By.TAG_NAME, "body").get_attribute("class")
    press(browser, "v")

    # A button click and a filter: rejected pairs only.
    browser.find_element(By.CSS_SELECTOR, '.card[data-key="good/0"] button.rejected').click()
    wait_for(lambda: curation_file(folder).get("good/0") == "rejected", what="the button's decision")
    from selenium.webdriver.support.ui import Select

    Select(browser.find_element(By.ID, "decision-filter")).select_by_value("rejected")
    shown = [c.get_attribute("data-key") for c in browser.find_elements(By.CSS_SELECTOR, ".card")]
    assert shown == ["dent/1", "good/0", "scratch/0"]
    assert accepted_keys(folder) == {("dent", 0), ("scratch", 1)}
    assert (gallery.root / "gallery.png").stat().st_size > 1000


def test_browser_sorts_by_qc_score_and_says_when_split_is_missing(folder, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    shutil.rmtree(folder.run)
    with serve(folder.generated) as server:
        browser.get(server.url)
        wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, ".card"), what="the cards")
        messages = " ".join(m.text for m in browser.find_elements(By.CSS_SELECTOR, ".message"))
        assert "Real training pairs are not shown" in messages and "no such folder" in messages
        Select(browser.find_element(By.ID, "kind-filter")).select_by_value("scratch")
        Select(browser.find_element(By.ID, "sort")).select_by_value("qc-desc:mask_fit")
        shown = [c.get_attribute("data-key") for c in browser.find_elements(By.CSS_SELECTOR, ".card")]
        assert shown == ["scratch/0", "scratch/1", "scratch/2"]
        Select(browser.find_element(By.ID, "sort")).select_by_value("qc-desc:fidelity")
        shown = [c.get_attribute("data-key") for c in browser.find_elements(By.CSS_SELECTOR, ".card")]
        assert shown == ["scratch/2", "scratch/1", "scratch/0"]
        browser.find_element(By.ID, "qc-min").send_keys("0.55")
        wait_for(lambda: len(browser.find_elements(By.CSS_SELECTOR, ".card")) == 2, what="the score filter")
        wait_for(lambda: not browser.execute_script(BROKEN_IMAGES), what="every image to load")
