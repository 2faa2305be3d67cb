"""The web page at ``/`` of ``fruitlens serve``, driven by a real headless browser.

Debian's ``chromium`` with its ``chromedriver`` (``apt-get install chromium
chromium-driver``), through Selenium, against the real server (``create_app`` in a
``ServerThread``: uvicorn on 127.0.0.1) and the ``classifier_dir`` MODEL_DIR of
tests/conftest.py: a real photo uploaded through ``#file`` (the camera/file input) or
dropped on the page must show the label the :class:`fruitlens.Classifier` gives the same
file; a broken file must show ``#error``. The tests skip (with the reason) when chromium or
its driver is missing.

Environment: ``FRUITLENS_CHROMIUM`` / ``FRUITLENS_CHROMEDRIVER`` override the binaries.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("starlette", reason="the serve extra is needed: pip install 'fruitlens[serve]'")
pytest.importorskip("uvicorn", reason="pip install 'fruitlens[serve]'")
pytest.importorskip("selenium", reason="selenium is in the dev extra: pip install selenium")

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from fruitlens.classify import Classifier
from fruitlens.serve import ServerThread, create_app
from fruitlens.serve._page import PAGE_HTML

WAIT = 60  # seconds: a cold first inference on a busy 2-core machine can be slow


def _binary(env: str, *names: str) -> str | None:
    if os.environ.get(env):
        return os.environ[env]
    for name in names:
        found = shutil.which(name) or shutil.which(name, path="/usr/bin")
        if found:
            return found
    return None


CHROMIUM = _binary("FRUITLENS_CHROMIUM", "chromium", "chromium-browser")
CHROMEDRIVER = _binary("FRUITLENS_CHROMEDRIVER", "chromedriver")


# --------------------------------------------------------------------------------------
# fixtures: the server (uvicorn in a thread), the browser
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def info_file(classifier_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An --info JSON for the classifier's labels (the sample's 4 classes)."""
    labels = Classifier(classifier_dir).labels
    info = {
        label: {
            "display_name": f"{label.title()} (test)",
            "description": f"The <b>{label}</b> class of fruits360-sample.",
            "family": "Testaceae",
        }
        for label in labels
    }
    path = tmp_path_factory.mktemp("info") / "info.json"
    path.write_text(json.dumps(info), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def server(classifier_dir: Path, info_file: Path):
    """``create_app(classifier_dir, info=...)`` under uvicorn on 127.0.0.1:<free port>;
    the URL of the page (``/``), once ``/readyz`` answers 200."""
    with ServerThread(create_app(classifier_dir, info=info_file)).start(timeout=180) as srv:
        yield srv.url + "/"


@pytest.fixture(scope="module")
def browser():
    """Headless chromium (phone-sized window) through chromedriver."""
    if not CHROMIUM or not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (apt-get install chromium chromium-driver)")
    if not CHROMEDRIVER or not Path(CHROMEDRIVER).exists():
        pytest.skip("chromedriver is not installed (apt-get install chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    options.add_argument("--window-size=412,915")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def classifier(classifier_dir: Path) -> Classifier:
    return Classifier(classifier_dir)


@pytest.fixture(scope="module")
def photos(shared_dir: Path) -> list[Path]:
    """One real Test photo per class of fruits360-sample."""
    test = shared_dir / "data" / "fruits360-sample" / "Test"
    return [sorted(d.iterdir())[7] for d in sorted(test.iterdir()) if d.is_dir()]


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


def _open(driver, url: str) -> None:
    driver.get(url)
    WebDriverWait(driver, WAIT).until(
        lambda d: d.execute_script("return document.readyState") == "complete"
    )


def _wait_result(driver) -> str:
    """The shown label once the page shows a result or an error (fails on the error)."""

    def done(d):
        if d.find_element(By.ID, "error").is_displayed():
            return "error"
        return d.find_element(By.ID, "label").text.strip() or False

    WebDriverWait(driver, WAIT).until(done)
    error = driver.find_element(By.ID, "error")
    assert not error.is_displayed(), f"the page shows an error: {error.text}"
    return driver.find_element(By.ID, "label").text.strip()


def _expected(classifier: Classifier, path: Path, top: int = 5) -> dict:
    row = classifier.predict([str(path)], top=top).to_pylist()[0]
    assert row["error"] is None, row["error"]
    return row


def _shown_top(driver) -> list[tuple[str, float]]:
    items = driver.find_elements(By.CSS_SELECTOR, "#top li")
    return [(li.get_attribute("data-label"), float(li.get_attribute("data-score"))) for li in items]


# --------------------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------------------


def test_page_is_served_and_self_contained(server: str) -> None:
    with urllib.request.urlopen(server, timeout=30) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/html")
        body = resp.read().decode("utf-8")
    assert body == PAGE_HTML
    for element_id in ("file", "label", "top", "info", "error"):
        assert f'id="{element_id}"' in body
    assert 'accept="image/*" capture="environment"' in body
    assert 'name=viewport content="width=device-width' in body
    # no external resource: no URL with a scheme or protocol-relative src/href
    assert "http://" not in body and "https://" not in body
    assert 'src="//' not in body and 'href="//' not in body


def test_upload_shows_the_classifiers_label(
    browser, server: str, classifier: Classifier, photos: list[Path], info_file: Path
) -> None:
    info = json.loads(info_file.read_text(encoding="utf-8"))
    for photo in photos:
        expected = _expected(classifier, photo)
        _open(browser, server)  # a fresh page: nothing left of the previous photo
        assert not browser.find_element(By.ID, "error").is_displayed()
        assert browser.find_element(By.ID, "label").text == ""
        browser.execute_script(_RECORD_SENT_JS)
        browser.find_element(By.ID, "file").send_keys(str(photo))
        assert _wait_result(browser) == expected["label"], photo
        assert browser.execute_script("return window.__sent") == [photo.stat().st_size]
        shown = _shown_top(browser)
        assert [label for label, _ in shown] == [t["label"] for t in expected["top"]]
        assert [s for _, s in shown] == pytest.approx(
            [t["score"] for t in expected["top"]], abs=1e-4
        )
        assert len(shown) == min(5, len(classifier.labels))
        fields = {
            dd.get_attribute("data-field"): dd.text
            for dd in browser.find_elements(By.CSS_SELECTOR, "#info dd")
        }
        assert fields == info[expected["label"]]  # shown as text, never as HTML
        assert browser.find_element(By.ID, "info").is_displayed()
        assert browser.find_element(By.ID, "name").text == info[expected["label"]]["display_name"]


def test_broken_file_shows_an_error(browser, server: str, tmp_path: Path) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0" + b"not really a jpeg" * 20)
    _open(browser, server)
    browser.find_element(By.ID, "file").send_keys(str(broken))
    error = browser.find_element(By.ID, "error")
    WebDriverWait(browser, WAIT).until(lambda d: error.is_displayed())
    assert error.get_attribute("data-kind")  # the server's error kind
    assert len(error.text) > len(error.get_attribute("data-kind")) + 2  # and its message
    assert not browser.find_element(By.ID, "result").is_displayed()
    assert browser.find_element(By.ID, "label").text == ""


def test_error_then_success_clears_the_error(
    browser, server: str, classifier: Classifier, photos: list[Path], tmp_path: Path
) -> None:
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    _open(browser, server)
    browser.find_element(By.ID, "file").send_keys(str(empty))
    WebDriverWait(browser, WAIT).until(lambda d: d.find_element(By.ID, "error").is_displayed())
    browser.find_element(By.ID, "pick").send_keys(str(photos[0]))  # the gallery input
    assert _wait_result(browser) == _expected(classifier, photos[0])["label"]


_DROP_JS = """
const [b64, name, done] = arguments;
const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
const dt = new DataTransfer();
dt.items.add(new File([bytes], name, {type: "image/jpeg"}));
const drop = document.getElementById("drop");
for (const type of ["dragenter", "dragover", "drop"]) {
  drop.dispatchEvent(new DragEvent(type, {dataTransfer: dt, bubbles: true, cancelable: true}));
}
done();
"""


def test_dropped_photo_is_recognised(
    browser, server: str, classifier: Classifier, photos: list[Path]
) -> None:
    photo = photos[-1]
    _open(browser, server)
    data = base64.b64encode(photo.read_bytes()).decode("ascii")
    browser.execute_async_script(_DROP_JS, data, photo.name)
    assert _wait_result(browser) == _expected(classifier, photo)["label"]


def test_large_photo_is_scaled_down_and_recognised(
    browser, server: str, classifier: Classifier, photos: list[Path], tmp_path: Path
) -> None:
    """A 12-Mpx phone-sized photo goes through (scaled down in the browser first)."""
    image_mod = pytest.importorskip("PIL.Image")
    big = tmp_path / "big.jpg"
    with image_mod.open(photos[0]) as im:
        buf = io.BytesIO()
        im.convert("RGB").resize((4000, 3000), image_mod.BICUBIC).save(buf, "JPEG", quality=90)
    big.write_bytes(buf.getvalue())
    _open(browser, server)
    browser.execute_script(_RECORD_SENT_JS)
    browser.find_element(By.ID, "file").send_keys(str(big))
    label = _wait_result(browser)
    assert label in classifier.labels  # a label is shown, no error
    assert len(_shown_top(browser)) >= 1
    sent = browser.execute_script("return window.__sent")
    assert len(sent) == 1 and 0 < sent[0] < big.stat().st_size  # a smaller JPEG was sent


_RECORD_SENT_JS = """
window.__sent = [];
const realFetch = window.fetch;
window.fetch = (url, init) => {
  if (init && init.body) window.__sent.push(init.body.size);
  return realFetch(url, init);
};
"""
