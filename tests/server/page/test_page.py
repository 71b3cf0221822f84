"""The page at `/` (server/page/: its routes and static files): served with its assets from the package, nothing
fetched from elsewhere, every control labelled; and in a real browser, Debian's chromium driven headless by
Selenium, against a real `fishvoice serve` whose fake microphone plays a question Piper spoke: the question
is heard, answered in words and the answer's audio played, hands-free and holding Space to talk."""

from __future__ import annotations

import base64
import html.parser
import os
import re
import shutil
import subprocess
import sys
import time
import wave
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from fishvoice.audio import Audio, resample
from fishvoice.server.page.routes import build_page_router, static_files
from fishvoice.tts.base import synthesize
from tests.conftest import ROOT
from tests.servers import server

pytestmark = pytest.mark.model  # loads models (or starts a server that does)

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
KEY = "page-test-key"
QUESTION = "How many legs does a spider have?"
SYSTEM = "You are a helpful voice assistant. Answer briefly, in plain sentences."
# Set to a path (docs/page.png) to save a screenshot of the page in use, as the README shows it.
SCREENSHOT = os.environ.get("FISHVOICE_PAGE_SCREENSHOT")


@pytest.fixture(scope="module")
def client() -> TestClient:
    app = FastAPI()
    app.include_router(build_page_router())
    return TestClient(app)


def test_the_page_and_its_assets_are_served_from_the_package(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text)
    assets += re.findall(r'"(/static/[^"]+\.js)"', static_files()["page.js"].decode())  # the capture worklet
    assert sorted(assets) == ["/static/capture.js", "/static/page.css", "/static/page.js"]
    for path in assets:
        asset = client.get(path)
        assert asset.status_code == 200 and asset.content == static_files()[path.rsplit("/", 1)[1]]
        kind = "text/css" if path.endswith(".css") else "text/javascript"
        assert asset.headers["content-type"] == f"{kind}; charset=utf-8"
    assert client.head("/").status_code == 200


@pytest.mark.parametrize("path", ["/static/nope.js", "/static/index.html", "/static/..%2Fpage.py", "/static/"])
def test_other_paths_under_static_are_not_found(client, path):
    assert client.get(path).status_code == 404


def without_comments(name: str, text: str) -> str:
    if name.endswith(".html"):
        return re.sub(r"<!--.*?-->", "", text, flags=re.S)
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return text if name.endswith(".css") else re.sub(r"(^|\s)//.*$", r"\1", text, flags=re.M)


def test_the_shipped_files_fetch_nothing_from_elsewhere():
    files = static_files()
    assert set(files) == {"index.html", "page.js", "page.css", "capture.js"}
    for name, body in files.items():
        code = without_comments(name, body.decode())
        assert not re.search(r"https?://", code, re.I), f"{name} names an address elsewhere"
        assert "@import" not in code and "import(" not in code, name
    for link in re.findall(r'(?:src|href|action)="([^"]*)"', files["index.html"].decode()):
        assert link.startswith("/static/") or link == "data:,", link


class Controls(html.parser.HTMLParser):
    """Each form control of a page with the label a screen reader would give it (None: none)."""

    def __init__(self) -> None:
        super().__init__()
        self.labelled_ids: set[str] = set()
        self.controls: list[dict[str, Any]] = []
        self.open_labels = 0
        self.open_buttons: list[dict[str, Any]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "label":
            self.open_labels += 1
            if attributes.get("for"):
                self.labelled_ids.add(str(attributes["for"]))
        elif tag in ("input", "select", "textarea") and attributes.get("type") != "hidden":
            self.controls.append({"tag": tag, "in_label": self.open_labels > 0, **attributes})
        elif tag == "button":
            button = {"tag": tag, "text": "", **attributes}
            self.controls.append(button)
            self.open_buttons.append(button)

    def handle_endtag(self, tag: str) -> None:
        if tag == "label":
            self.open_labels -= 1
        elif tag == "button":
            self.open_buttons.pop()

    def handle_data(self, data: str) -> None:
        for button in self.open_buttons:
            button["text"] += data.strip()


def test_every_control_has_a_label():
    parser = Controls()
    parser.feed(static_files()["index.html"].decode())
    assert len(parser.controls) >= 12
    for control in parser.controls:
        named = control.get("aria-label") or control.get("aria-labelledby")
        if control["tag"] == "button":
            assert named or control["text"], control
            assert control.get("type") in ("button", "submit"), control  # none submits a form by surprise
        else:
            assert named or control["in_label"] or control.get("id") in parser.labelled_ids, control


def test_a_built_wheel_ships_the_page(tmp_path):
    """A non-editable install has the page: the package data names the static files."""
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "src", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", "dist", "."],
        cwd=tmp_path,
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("fishvoice-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"fishvoice/server/page/static/{name}" for name in static_files()} <= names


# ---- in a browser, against a real server ----


def write_wav(audio: Audio, path: Path) -> Path:
    """16-bit mono WAV, the format Chromium's fake microphone plays."""
    samples = np.clip(audio.samples * 32767, -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(audio.sample_rate)
        out.writeframes(samples.tobytes())
    return path


def silence(seconds: float) -> np.ndarray:
    return np.zeros(round(48000 * seconds), np.float32)


@pytest.fixture(scope="module")
def question(tts) -> np.ndarray:
    """Piper asking QUESTION, at 48 kHz."""
    return resample(synthesize(tts, QUESTION), 48000).samples


@pytest.fixture(scope="module")
def question_wav(question, tmp_path_factory) -> Path:
    """The question, with a second of silence before and two after."""
    padded = np.concatenate([silence(1), question, silence(2)])
    return write_wav(Audio(padded, 48000), tmp_path_factory.mktemp("page") / "question.wav")


@pytest.fixture(scope="module")
def url(tmp_path_factory) -> Iterator[str]:
    with server(tmp_path_factory.mktemp("page-server"), api_key=KEY) as base:
        yield base


# The page's microphone replaced by a stream the test speaks into when it chooses (silence between), so
# a test can speak over a reply whenever it plays, however long the reply is.
SCRIPTED_MICROPHONE = """(() => {
  let context = null;
  let line = null;
  navigator.mediaDevices.getUserMedia = async () => {
    context ??= new AudioContext();
    line ??= context.createMediaStreamDestination();
    return line.stream;
  };
  window.speakIntoMicrophone = (pcm16, rate) => {
    const bytes = Uint8Array.from(atob(pcm16), (c) => c.charCodeAt(0));
    const samples = new Int16Array(bytes.buffer);
    const buffer = context.createBuffer(1, samples.length, rate);
    buffer.getChannelData(0).set(Float32Array.from(samples, (s) => s / 32768));
    const source = context.createBufferSource();
    source.buffer = buffer;
    source.connect(line);
    source.start();
  };
})();"""


def speak_into_microphone(driver: Any, samples: np.ndarray, rate: int = 48000) -> None:
    """Plays `samples` into the scripted microphone (chromium(scripted_microphone=True))."""
    pcm16 = np.clip(samples * 32767, -32768, 32767).astype("<i2").tobytes()
    driver.execute_script(
        "window.speakIntoMicrophone(arguments[0], arguments[1])", base64.b64encode(pcm16).decode(), rate
    )


@contextmanager
def chromium(microphone: Path | None = None, *, scripted_microphone: bool = False) -> Iterator[Any]:
    """Debian's chromium, headless, its microphone fake: a beep, `microphone` played once, or (scripted)
    silence until the test speaks."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists(), (
        "chromium is needed (Debian: apt-get install chromium chromium-driver; .ci/run installs them)"
    )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM  # with the driver's path given too, Selenium Manager fetches nothing
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1100,1000",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        "--autoplay-policy=no-user-gesture-required",
    ):
        options.add_argument(argument)
    if microphone is not None:
        options.add_argument(f"--use-file-for-fake-audio-capture={microphone}%noloop")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    if scripted_microphone:
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": SCRIPTED_MICROPHONE})
    try:
        yield driver
        errors = [entry for entry in driver.get_log("browser") if entry["source"] == "javascript"]
        assert not errors, errors
    finally:
        driver.quit()


def wait_for(driver: Any, condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what}: not seen in {timeout} s; the page said: {page_report(driver)}")


def page_report(driver: Any) -> dict[str, Any]:
    """What the page shows, in one call: its state, its error, the conversation, the audio played."""
    return driver.execute_script(
        """const body = document.body;
        return {state: body.dataset.state, mic: body.dataset.mic, chunks: Number(body.dataset.audioChunks),
                ms: Number(body.dataset.audioMs), status: document.getElementById("state-text").textContent,
                error: document.getElementById("error").hidden ? null : document.getElementById("error").textContent,
                entries: Array.from(document.querySelectorAll("#conversation li"), (li) => ({
                  role: li.className.split(" ")[0], pending: li.classList.contains("pending"),
                  busy: li.getAttribute("aria-busy") === "true",
                  text: li.querySelector(".text").textContent, note: li.querySelector(".note")?.textContent}))};"""
    )


def open_page(driver: Any, url: str, *, mode: str = "hands-free", system: str = SYSTEM) -> None:
    """The page with the key entered, `system` as its prompt and `mode` chosen; what it sends on its
    WebSocket (but the audio) is kept in `window.sent` for the test to read."""
    from selenium.webdriver.common.by import By

    driver.get(url + "/")
    driver.execute_script(
        """window.sent = [];
        const send = WebSocket.prototype.send;
        WebSocket.prototype.send = function (data) {
          const event = JSON.parse(data);
          if (event.type !== "input_audio_buffer.append") window.sent.push(event);
          return send.call(this, data);
        };"""
    )
    wait_for(driver, lambda: "needed" in driver.find_element(By.ID, "key-row").get_attribute("class"), 20, "key asked")
    driver.find_element(By.ID, "key").send_keys(KEY)
    driver.find_element(By.ID, "instructions").clear()
    driver.find_element(By.ID, "instructions").send_keys(system)
    driver.find_element(By.CSS_SELECTOR, f'input[name="mode"][value="{mode}"]').click()


def watch_highlights(driver: Any) -> None:
    """Each word the page highlights as heard is kept in `window.highlighted` ({text, start}), in turn."""
    driver.execute_script(
        """window.highlighted = [];
        let last = null;
        new MutationObserver((changes) => {
          for (const change of changes) {
            const word = change.target;
            const now = word.classList && word.classList.contains("word") && word.classList.contains("now");
            if (now && word.dataset.start !== last) {  // a word re-rendered as more text came is the same word
              last = word.dataset.start;
              window.highlighted.push({text: word.textContent, start: Number(word.dataset.start)});
            }
          }
        }).observe(document.body, {subtree: true, attributes: true, attributeFilter: ["class"]});"""
    )


def sent(driver: Any, kind: str) -> list[dict[str, Any]]:
    """The events of type `kind` the page sent."""
    return [event for event in driver.execute_script("return window.sent") if event["type"] == kind]


def heard_and_answered(driver: Any) -> dict[str, Any] | None:
    report = page_report(driver)
    users = [e for e in report["entries"] if e["role"] == "user" and not e["pending"]]
    replies = [e for e in report["entries"] if e["role"] == "assistant" and not e["pending"] and e["text"].strip()]
    heard = any({"spider", "legs"} & set(re.findall(r"[a-z]+", e["text"].lower())) for e in users)
    return report if heard and replies and report["chunks"] > 0 else None


def answered_again(driver: Any, replies: int = 3) -> dict[str, Any] | None:
    """The report once the last entry is the `replies`th reply, written whole (aria-busy no more)."""
    report = page_report(driver)
    last = report["entries"][-1] if report["entries"] else {"role": None}
    count = len([entry for entry in report["entries"] if entry["role"] == "assistant"])
    done = last["role"] == "assistant" and not last["pending"] and not last["busy"]
    return report if done and count >= replies else None


@pytest.mark.parametrize("rate", [24000, 48000])
def test_the_capture_worklet_sends_80_ms_pcm16_chunks_at_24_khz(url, rate):
    """At 24 kHz the browser resamples the microphone; in a 48 kHz context capture.js does."""
    with chromium() as driver:
        driver.get(url + "/")
        driver.set_script_timeout(20)
        result = driver.execute_async_script(
            """const [rate, done] = arguments;
            (async () => {
            const context = new AudioContext({sampleRate: rate});
            await context.audioWorklet.addModule("/static/capture.js");
            const mic = await navigator.mediaDevices.getUserMedia({audio: true});
            const node = new AudioWorkletNode(context, "pcm-capture");
            const sizes = [];
            let first = null, samples = 0, peak = 0;
            node.port.onmessage = ({data}) => {
              const pcm = new Int16Array(data.pcm);
              if (first === null) { first = performance.now(); return; }
              sizes.push(pcm.length);
              samples += pcm.length;
              for (const s of pcm) peak = Math.max(peak, Math.abs(s));
            };
            const silent = context.createGain();
            silent.gain.value = 0;
            context.createMediaStreamSource(mic).connect(node).connect(silent).connect(context.destination);
            await context.resume();
            setTimeout(() => done({sizes, rate: samples / ((performance.now() - first) / 1000), peak,
                                   contextRate: context.sampleRate}), 3000);
            })().catch((error) => done({error: String(error)}));""",
            rate,
        )
    assert "error" not in result and result["contextRate"] == rate, result
    assert result["sizes"] and set(result["sizes"]) == {1920}  # 80 ms at 24 kHz
    assert 0.8 * 24000 < result["rate"] < 1.1 * 24000
    assert result["peak"] > 1000  # the fake microphone's beep, not silence


def test_without_the_key_the_page_asks_for_it_and_says_why_it_could_not_connect(url):
    from selenium.webdriver.common.by import By

    with chromium() as driver:
        driver.get(url + "/")
        key_row = driver.find_element(By.ID, "key-row")
        wait_for(driver, lambda: "needed" in key_row.get_attribute("class"), 20, "the key asked for")
        assert key_row.is_displayed() and "needs a key" in driver.find_element(By.ID, "key-help").text
        driver.find_element(By.ID, "connect").click()
        error = wait_for(driver, lambda: page_report(driver)["error"], 30, "an error")
        assert "unauthorized" in error.lower() and "key" in error.lower()
        assert page_report(driver)["state"] == "idle"
        assert driver.find_element(By.ID, "connect").text == "Start"


def test_hands_free_the_page_hears_the_question_answers_it_and_plays_the_reply(url, question_wav):
    from selenium.webdriver.common.by import By

    with chromium(question_wav) as driver:
        open_page(driver, url)
        watch_highlights(driver)
        driver.find_element(By.ID, "connect").click()
        wait_for(driver, lambda: page_report(driver)["mic"] == "on", 30, "the microphone on")
        assert page_report(driver)["state"] in ("listening", "thinking")
        report = wait_for(driver, lambda: heard_and_answered(driver), 180, "the question heard and answered")
        assert report["error"] is None, report
        assert report["ms"] > 0 and "Played" in driver.find_element(By.ID, "playback").text
        wait_for(driver, lambda: page_report(driver)["state"] == "listening", 120, "back to listening")
        assert "Listening" in driver.find_element(By.ID, "state-text").text
        # Words of the reply were highlighted as they were heard: in the order of the text, by their timings
        # (a short word may pass between two frames of the page).
        highlighted = driver.execute_script("return window.highlighted")
        reply = driver.execute_script(
            "return [...document.querySelectorAll('li.assistant .word')].map(w => w.textContent)"
        )
        assert len(highlighted) >= 3 and len(reply) >= 3, (highlighted, reply)
        remaining = iter(reply)
        assert all(word["text"] in remaining for word in highlighted), (highlighted, reply)  # a subsequence
        starts = [word["start"] for word in highlighted]
        assert starts == sorted(starts), highlighted
        if SCREENSHOT:
            driver.execute_script("document.activeElement.blur()")
            driver.save_screenshot(SCREENSHOT)


def test_holding_space_talks_and_typing_over_the_reply_interrupts_it(url, question_wav):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    with chromium(question_wav) as driver:
        open_page(driver, url, mode="push-to-talk")
        driver.find_element(By.ID, "connect").click()
        wait_for(driver, lambda: page_report(driver)["mic"] == "on", 30, "the microphone on")
        talk = driver.find_element(By.ID, "talk")
        assert driver.switch_to.active_element == talk and page_report(driver)["state"] == "ready"
        ActionChains(driver).key_down(Keys.SPACE).perform()
        assert talk.get_attribute("aria-pressed") == "true" and page_report(driver)["state"] == "listening"
        time.sleep(4.5)  # the question, with its silence
        ActionChains(driver).key_up(Keys.SPACE).perform()
        assert talk.get_attribute("aria-pressed") == "false"
        wait_for(driver, lambda: heard_and_answered(driver), 180, "the question heard and answered")
        assert sent(driver, "session.update")[0]["session"]["audio"]["input"]["turn_detection"] is None
        assert [event["type"] for event in driver.execute_script("return window.sent")][-3:] == [
            "input_audio_buffer.clear",  # pressed
            "input_audio_buffer.commit",  # let go: the turn, then ask for its answer
            "response.create",
        ]
        # Typing while it speaks stops its audio at once, marks the reply cut and gets a new one.
        driver.find_element(By.ID, "instructions").clear()
        driver.find_element(By.ID, "instructions").send_keys("You tell long stories.")
        driver.find_element(By.ID, "typed").send_keys("Tell me a long story about spiders." + Keys.ENTER)
        wait_for(driver, lambda: page_report(driver)["state"] == "speaking", 120, "speaking")
        driver.find_element(By.ID, "typed").send_keys("Thank you." + Keys.ENTER)
        stopped = page_report(driver)
        assert stopped["state"] != "speaking"
        time.sleep(0.5)
        assert page_report(driver)["ms"] == stopped["ms"]  # nothing more of the cut reply was played
        assert sent(driver, "response.cancel")
        cut = sent(driver, "conversation.item.truncate")[-1]
        assert cut["content_index"] == 0 and 0 <= cut["audio_end_ms"] <= stopped["ms"] and cut["item_id"]
        report = wait_for(driver, lambda: answered_again(driver), 180, "a reply to the typed message")
        assert any(e["note"] == "(interrupted)" for e in report["entries"]), report
        assert report["error"] is None, report


def test_speaking_over_the_reply_stops_it_and_tells_the_server_how_much_was_heard(url, question):
    """Hands-free: the question is asked again as soon as the answer to it plays."""
    with chromium(scripted_microphone=True) as driver:
        open_page(driver, url, system="You tell long stories. Answer with at least ten sentences.")
        driver.find_element("id", "connect").click()
        wait_for(driver, lambda: page_report(driver)["mic"] == "on", 30, "the microphone on")
        speak_into_microphone(driver, question)
        wait_for(driver, lambda: page_report(driver)["state"] == "speaking", 120, "the first answer playing")
        speak_into_microphone(driver, question)
        wait_for(driver, lambda: sent(driver, "conversation.item.truncate"), 60, "the answer cut")
        cut = page_report(driver)
        assert cut["state"] != "speaking"
        (truncate,) = sent(driver, "conversation.item.truncate")
        assert truncate["content_index"] == 0 and 0 < truncate["audio_end_ms"] <= cut["ms"]
        assert not sent(driver, "response.cancel")  # the server's VAD cancels it (interrupt_response)
        report = wait_for(driver, lambda: answered_again(driver, replies=2), 180, "the second question answered")
        assert report["entries"][1]["note"] == "(interrupted)", report
        assert [e["role"] for e in report["entries"]] == ["user", "assistant", "user", "assistant"], report
        assert report["error"] is None, report


def test_a_voice_uploaded_on_the_page_is_saved_and_chosen(url, question_wav):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.select import Select

    with chromium() as driver:
        open_page(driver, url)
        driver.find_element(By.ID, "voice-id").send_keys("page-voice")
        driver.find_element(By.ID, "voice-file").send_keys(str(question_wav))
        driver.find_element(By.ID, "voice-text").send_keys(QUESTION)
        driver.find_element(By.ID, "save-voice").click()
        status = driver.find_element(By.ID, "voice-status")
        wait_for(driver, lambda: "Saved" in status.text or "not saved" in status.text, 60, "the voice saved")
        assert "Saved" in status.text, status.text
        assert Select(driver.find_element(By.ID, "voice")).first_selected_option.get_attribute("value") == "page-voice"


def test_a_voice_recorded_on_the_page_is_saved_and_chosen(url, question_wav):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.select import Select

    with chromium(question_wav) as driver:
        open_page(driver, url)
        record = driver.find_element(By.ID, "record")
        record.click()
        wait_for(driver, lambda: record.get_attribute("aria-pressed") == "true", 10, "recording")
        time.sleep(3.5)  # the question, after its second of silence
        record.click()
        wait_for(driver, lambda: driver.find_element(By.ID, "recording").is_displayed(), 10, "the recording shown")
        driver.find_element(By.ID, "voice-id").send_keys("recorded-voice")
        driver.find_element(By.ID, "save-voice").click()
        status = driver.find_element(By.ID, "voice-status")
        wait_for(driver, lambda: "Saved" in status.text or "not saved" in status.text, 60, "the voice saved")
        assert "Saved" in status.text, status.text
        chosen = Select(driver.find_element(By.ID, "voice")).first_selected_option.get_attribute("value")
        assert chosen == "recorded-voice"
