"""`lightfer serve`: the JSON API over HTTP, the page in a real headless Chromium, the CLI.

The server is the real one, uvicorn on a free port in a thread, around a randomly
initialised EfficientFace at 64 px (batch norm recalibrated, so its distributions are not
flat) and the real MTCNN, which finds the astronaut's face whatever the model.

The browser test drives Debian's Chromium through its chromedriver (scripts/install_browser.sh
installs both; `make test` runs it first) and fails, rather than skips, without them. Its
screenshots are left for a person to look at, under the repository root:
test-artifacts/serve-astronaut.png (a photo chosen on the page), serve-error.png (a text file
refused) and serve-webcam.png (a webcam capture, the camera being Chromium's fake device
playing the astronaut).
"""

from __future__ import annotations

import asyncio
import base64
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
import torch
import uvicorn
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from skimage import data
from typer.testing import CliRunner

from lightfer.cli import app as cli_app
from lightfer.faces.detect import FaceDetector
from lightfer.labels import CLASSES
from lightfer.models import create_model, recalibrate_batchnorm
from lightfer.models.checkpoint import save_checkpoint
from lightfer.predict import Predictor
from lightfer.web import create_app
from tests.conftest import PROJECT_ROOT

SIZE = 64
LIMIT = 1_000_000  # the server's upload limit here, bytes
ASTRONAUT_BOX = [181, 62, 268, 172]  # MTCNN's box on skimage's astronaut (tests/faces)
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = PROJECT_ROOT / "test-artifacts"
# As root, in a container, on a network that refuses Chromium's own connections.
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,1000",
    # A camera that needs no permission prompt and plays a file.
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    batches = [torch.randn(4, 3, SIZE, SIZE, generator=generator) for _ in range(2)]
    model = recalibrate_batchnorm(create_model("efficientface"), batches).eval()
    path = tmp_path_factory.mktemp("model") / "ef.pt"
    return save_checkpoint(
        path,
        model,
        arch="efficientface",
        classes=CLASSES,
        image_size=SIZE,
        mean=(0.5,) * 3,
        std=(0.25,) * 3,
    )


@pytest.fixture(scope="module")
def predictor(checkpoint) -> Iterator[Predictor]:
    previous = torch.get_num_threads()
    yield Predictor.from_path(checkpoint, detector=FaceDetector(threads=1))
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    """The astronaut as a JPEG (and as a Y4M video for the fake camera), a grey picture
    without a face, and a text file."""
    root = tmp_path_factory.mktemp("photos")
    bgr = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    assert cv2.imwrite(str(root / "astronaut.jpg"), bgr)
    assert cv2.imwrite(str(root / "grey.png"), np.full((240, 320, 3), 128, np.uint8))
    (root / "notes.txt").write_text("not an image\n")
    height, width = bgr.shape[:2]
    planes = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420).tobytes()
    header = f"YUV4MPEG2 W{width} H{height} F30:1 Ip A1:1 C420jpeg\n".encode()
    (root / "astronaut.y4m").write_bytes(header + b"FRAME\n" + planes)
    return {p.name: p for p in root.iterdir()}


@pytest.fixture(scope="module")
def server(predictor) -> Iterator[str]:
    """The app on uvicorn in a thread, on a free port; its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    app = create_app(predictor, model_name="ef.pt", max_upload_bytes=LIMIT)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


def _upload(client: httpx.Client, name: str, content: bytes) -> httpx.Response:
    return client.post("/api/predict", files={"file": (name, content)})


def test_the_api_returns_the_rows_of_predict_and_refuses_bad_uploads(server, predictor, photos):
    with httpx.Client(base_url=server, timeout=60) as client:
        assert client.get("/api/health").json() == {
            "status": "ok",
            "model": "ef.pt",
            "classes": list(CLASSES),
            "image_size": SIZE,
            "max_upload_bytes": LIMIT,
        }
        response = _upload(client, "astronaut.jpg", photos["astronaut.jpg"].read_bytes())
        assert response.status_code == 200, response.text
        rows = predictor.predict_paths([photos["astronaut.jpg"]], progress=False)
        expected = [replace(row, file="astronaut.jpg").to_dict() for row in rows]
        assert response.json() == {"file": "astronaut.jpg", "rows": expected}
        np.testing.assert_allclose(expected[0]["box"], ASTRONAUT_BOX, atol=10)

        refusals = {
            "notes.txt": (415, "notes.txt: not an image format PIL can decode"),
            "empty.jpg": (415, "empty.jpg: file is empty (0 bytes)"),
            "grey.png": (422, "grey.png: no face found"),
        }
        for name, (status, message) in refusals.items():
            path = photos.get(name)
            response = _upload(client, name, path.read_bytes() if path else b"")
            assert response.status_code == status, response.text
            assert response.json()["detail"].startswith(message)
        too_large = "the upload is larger than the limit of 1 MB (lightfer serve --max-upload-mb)"
        # Just over the limit: the endpoint sees the file's size; far over it: the request's
        # Content-Length is refused before the body is read; streamed without one: refused
        # once the bytes received pass the limit.
        for size in (LIMIT + 1, 3 * LIMIT):
            response = _upload(client, "big.jpg", bytes(size))
            assert (response.status_code, response.json()) == (413, {"detail": too_large})
        head = b'--B\r\nContent-Disposition: form-data; name="file"; filename="big.jpg"\r\n\r\n'
        response = client.post(
            "/api/predict",
            content=iter([head, *[bytes(2**16)] * 32]),
            headers={"content-type": "multipart/form-data; boundary=B"},
        )
        assert (response.status_code, response.json()) == (413, {"detail": too_large})
        response = client.post("/api/predict", data={"other": "field"})
        assert response.status_code == 422 and response.json()["detail"]  # no `file` field
        assert client.get("/api/health").status_code == 200  # still serving


@pytest.fixture(scope="module")
def browser(photos, tmp_path_factory) -> Iterator[webdriver.Chrome]:
    """Headless Chromium, with its fake camera playing the astronaut."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    if missing:
        pytest.fail(
            f"the browser test needs {' and '.join(missing)}: run scripts/install_browser.sh "
            f"(`make test` does)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium')}")
    options.add_argument(f"--use-file-for-fake-video-capture={photos['astronaut.y4m']}")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SE_OFFLINE", "true")  # Selenium Manager must not look for a driver online
        driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()


# Drops a file, given as base64 and a name, on the page as a drag from the desktop would.
DROP = """
const [data, name] = arguments;
const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
const transfer = new DataTransfer();
transfer.items.add(new File([bytes], name));
const drop = new DragEvent("drop", { dataTransfer: transfer, bubbles: true, cancelable: true });
document.getElementById("drop").dispatchEvent(drop);
"""


def _faces(driver: webdriver.Chrome) -> list[dict[str, object]]:
    """The face cards on the page: label, and each bar's class name and percentage."""
    cards = []
    for card in driver.find_elements(By.CSS_SELECTOR, "#faces .face"):
        bars = card.find_elements(By.CSS_SELECTOR, ".bar")
        cards.append(
            {
                "label": card.find_element(By.TAG_NAME, "h2").text.split()[-1],
                "names": [b.find_element(By.CLASS_NAME, "name").text for b in bars],
                "percent": [float(b.find_element(By.CLASS_NAME, "value").text[:-1]) for b in bars],
            }
        )
    return cards


def _box_in_photo_pixels(driver: webdriver.Chrome, photo_side: int) -> list[float]:
    """The drawn box, mapped back from screen to photo pixels through the image's size."""
    image = driver.find_element(By.ID, "image").rect
    box = driver.find_element(By.CSS_SELECTOR, "#frame .box").rect
    scale = photo_side / image["width"]
    x0, y0 = (box["x"] - image["x"]) * scale, (box["y"] - image["y"]) * scale
    return [x0, y0, x0 + box["width"] * scale, y0 + box["height"] * scale]


def test_the_page_boxes_the_face_shows_its_distribution_and_says_what_went_wrong(
    server, browser, photos
):
    """A photo chosen with the file input, a text file, a photo without a face and one over
    the limit dropped on the page, then a webcam capture.

    Screenshots: test-artifacts/serve-astronaut.png, serve-error.png and serve-webcam.png.
    """
    wait = WebDriverWait(browser, 30)
    browser.get(server)
    wait.until(lambda d: "ef.pt" in d.find_element(By.ID, "model").text)
    assert "1.0 MB" in browser.find_element(By.ID, "limit").text

    upload = browser.find_element(By.ID, "file")
    upload.send_keys(str(photos["astronaut.jpg"]))
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#frame .box"))
    (face,) = _faces(browser)
    assert face["names"] == list(CLASSES)
    assert sum(face["percent"]) == pytest.approx(100, abs=0.4)
    assert face["label"] == CLASSES[int(np.argmax(face["percent"]))]
    assert len(browser.find_elements(By.CSS_SELECTOR, "#frame .box")) == 1
    np.testing.assert_allclose(_box_in_photo_pixels(browser, 512), ASTRONAUT_BOX, atol=12)
    assert browser.find_element(By.ID, "caption").text == "astronaut.jpg: 1 face(s)"
    assert not browser.find_element(By.ID, "error").is_displayed()
    ARTIFACTS.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(ARTIFACTS / "serve-astronaut.png"))

    upload.send_keys(str(photos["notes.txt"]))
    error = browser.find_element(By.ID, "error")
    wait.until(lambda d: error.is_displayed())
    assert error.text.startswith("notes.txt: not an image format PIL can decode")
    assert not browser.find_element(By.ID, "result").is_displayed()
    assert browser.save_screenshot(str(ARTIFACTS / "serve-error.png"))

    grey = base64.b64encode(photos["grey.png"].read_bytes()).decode()
    browser.execute_script(DROP, grey, "grey.png")
    wait.until(lambda d: error.text.startswith("grey.png: no face found"))
    assert browser.find_element(By.ID, "image").is_displayed()  # the photo, without a box
    assert not browser.find_elements(By.CSS_SELECTOR, "#frame .box")
    browser.execute_script(DROP, base64.b64encode(bytes(2 * LIMIT)).decode(), "big.jpg")
    wait.until(lambda d: error.text.startswith("big.jpg (2.0 MB) is larger than the limit"))

    browser.find_element(By.ID, "camera").click()
    wait.until(lambda d: d.execute_script("return document.getElementById('video').videoWidth"))
    browser.find_element(By.ID, "capture").click()
    wait.until(lambda d: d.find_element(By.ID, "caption").text == "webcam.jpg: 1 face(s)")
    assert not error.is_displayed()
    assert [f["names"] for f in _faces(browser)] == [list(CLASSES)]
    assert browser.save_screenshot(str(ARTIFACTS / "serve-webcam.png"))
    assert browser.find_element(By.ID, "camera").text == "stop the webcam"


def test_cli_serve_builds_the_predictor_and_runs_uvicorn(checkpoint, monkeypatch):
    served = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: served.update(app=app, **kwargs))
    args = ["serve", "--model", str(checkpoint), "--port", "8123", "--max-upload-mb", "3"]
    result = CliRunner().invoke(cli_app, [*args, "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"serving {checkpoint} on http://127.0.0.1:8123/ (Ctrl+C stops)\n"
    assert (served["host"], served["port"]) == ("127.0.0.1", 8123)
    health, page, script = (
        _asgi(served["app"], "GET", p) for p in ("/api/health", "/", "/static/app.js")
    )
    assert [r.status_code for r in (health, page, script)] == [200] * 3
    assert (health.json()["model"], health.json()["max_upload_bytes"]) == ("ef.pt", 3_000_000)
    assert '<script src="/static/app.js"' in page.text and "/api/predict" in script.text


def _asgi(app: object, method: str, path: str, **kwargs: object) -> httpx.Response:
    """One request to an ASGI app in this process, without a server."""

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(call())


def test_a_model_failing_on_a_face_is_a_500_with_the_reason(predictor, photos):
    broken = Predictor(
        lambda batch: np.full((len(batch), len(CLASSES)), np.nan, np.float32),
        image_size=SIZE,
        mean=predictor.mean,
        std=predictor.std,
        detector=predictor.detector,
    )
    files = {"file": ("astronaut.jpg", photos["astronaut.jpg"].read_bytes())}
    response = _asgi(create_app(broken), "POST", "/api/predict", files=files)
    assert response.status_code == 500
    assert "non-finite outputs" in response.json()["detail"]


def test_cli_serve_refuses_a_missing_model_and_says_what_it_serves(tmp_path):
    result = CliRunner().invoke(cli_app, ["serve", "--model", str(tmp_path / "missing.pt")])
    assert result.exit_code == 1
    assert "missing.pt is not found" in result.stderr
    help_text = " ".join(CliRunner().invoke(cli_app, ["serve", "--help"]).output.split())
    assert "Serve the model's web page" in help_text
    for option in ("--model", "--host", "--port", "--max-upload-mb", "--device", "--threads"):
        assert option in help_text
