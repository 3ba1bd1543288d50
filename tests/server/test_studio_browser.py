"""The studio page in a real browser: Debian's chromium driven by Selenium through Debian's
chromedriver, against a live `steernpc serve --studio-port` on loopback (the tiny random
Llama, the sample personas copied to a temporary folder, a real steerability report).

Each state is saved as a PNG under the test's tmp_path (`screenshots/`), and also in
$STEERNPC_SCREENSHOTS when it is set (docs/studio.png was taken that way). Without chromium,
chromedriver or selenium the tests skip, except under `make test` (STEERNPC_REQUIRE_ALL=1),
where they fail: CI must run them."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from harness import REPO, SAMPLE_PERSONAS, NpcServer

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--window-size=1440,1000"]  # fmt: skip
WAIT = 60.0


def missing(reason: str):
    if os.environ.get("STEERNPC_REQUIRE_ALL") == "1":
        pytest.fail(f"required for the full suite: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser_parts():
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing("the studio's browser tests need selenium (pip install -e '.[dev]')")
    for binary, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(binary, os.X_OK):
            missing(f"the studio's browser tests need {binary} (apt-get install {package})")


def new_browser(profile: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM  # the system's chromium: nothing is downloaded
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


class Shots:
    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        extra = os.environ.get("STEERNPC_SCREENSHOTS")
        self.extra = Path(extra) if extra else None
        self.taken: list[Path] = []

    def take(self, driver, name: str) -> Path:
        path = self.folder / f"{len(self.taken) + 1:02d}-{name}.png"
        driver.save_screenshot(str(path))
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        if self.extra is not None:
            self.extra.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, self.extra / path.name)
        self.taken.append(path)
        return path


def wait_for(driver, check, what: str, timeout: float = WAIT):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            value = check(driver)
            if value:
                return value
        except Exception as exc:  # not there yet
            last = exc
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def severe_console_errors(driver, expected: tuple[str, ...] = ()) -> list[str]:
    """Script errors and failed loads, less the API refusals the test provoked on purpose."""
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE" and not any(x in e["message"] for x in expected)]


# -- a real steerability report of the served model --------------------------------------------------


@pytest.fixture(scope="module")
def steerability_report_dir(tiny_model_dir, tmp_path_factory):
    """`steernpc eval steerability` of the tiny model (its code, in process): an APM trained
    one epoch on the test data, Pip, one player line, 4-token replies."""
    import torch
    from steernpc_train.apm import APMConfig, tiny_encoder, train_apm
    from steernpc_train.evaluate import SteerConfig, steerability_report

    root = tmp_path_factory.mktemp("steerability")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        encoder = tiny_encoder(root / "encoder", hidden=32, layers=2, seed=0)
        train_apm(APMConfig(schema="npc", backbone=str(encoder), epochs=1, holdout=0), [REPO / "tests" / "data" / "train" / "npc.jsonl"], root / "apm")
        (root / "personas").mkdir()
        shutil.copy(SAMPLE_PERSONAS / "pip.yaml", root / "personas" / "pip.yaml")
        (root / "lines.txt").write_text("Have you seen my cat?\n")
        steerability_report(SteerConfig(model=str(tiny_model_dir), apm=str(root / "apm"), personas=[str(root / "personas")],
                                        prompts=str(root / "lines.txt"), out=str(root / "report"), max_new_tokens=4, batch_size=20))  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    assert (root / "report" / "report.json").is_file() and list((root / "report" / "plots").glob("*.png"))
    return root / "report"


@pytest.fixture(scope="module")
def personas(tmp_path_factory):
    folder = tmp_path_factory.mktemp("studio-personas") / "personas"
    shutil.copytree(SAMPLE_PERSONAS, folder)
    return folder


@pytest.fixture(scope="module")
def studio(launch, personas, steerability_report_dir):
    return launch("studio", studio=True, store="memory", personas=personas, extra=["--steerability", str(steerability_report_dir)])


@pytest.fixture(scope="module")
def driver(browser_parts, tmp_path_factory):
    d = new_browser(tmp_path_factory.mktemp("chromium-profile"))
    yield d
    d.quit()


# -- the tests ---------------------------------------------------------------------------------------


def test_the_page_shows_progress_while_the_model_loads(browser_parts, tmp_path):
    import urllib.request

    shots = Shots(tmp_path / "screenshots")
    browser = new_browser(tmp_path / "profile")  # started first, so the page opens while the model loads
    # The embedded SmolLM2 in a fresh STEERNPC_HOME: converted from its GGUF first (~20 s), a
    # real long load, so the page meets the loading state whatever the machine's speed.
    server = NpcServer(Path("smollm2"), tmp_path / "server", studio=True, store="memory", name="loading", start_timeout=600)
    try:
        server.spawn()
        deadline = time.monotonic() + WAIT
        while True:
            try:
                urllib.request.urlopen(f"{server.studio_url}/healthz", timeout=2)
            except urllib.error.HTTPError:  # 503: listening, still loading
                break
            except OSError:
                assert time.monotonic() < deadline, "the studio port never opened"
                time.sleep(0.05)
                continue
            pytest.fail("the model had loaded before the studio port answered")
        browser.get(server.studio_url)
        status = browser.find_element("id", "model-status")
        states = [wait_for(browser, lambda d: status.get_attribute("data-state") if status.text.strip() not in ("", "Connecting…") else None, "a status")]
        if states[0] == "loading":
            assert "Loading the model" in status.text and browser.find_element("id", "model-progress").is_displayed()
            shots.take(browser, "loading")
        wait_for(browser, lambda d: status.get_attribute("data-state") == "ready", "the model to load", timeout=600)
        assert states[0] == "loading", f"the page first showed {states[0]!r}, not the loading indicator"
        assert status.text.startswith("Model ready") and not browser.find_element("id", "model-progress").is_displayed()
        assert not browser.find_element("id", "chat-send").get_attribute("disabled")
    finally:
        browser.quit()
        server.stop()


def test_a_designer_tunes_a_character(studio, driver, personas, steerability_report_dir, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    shots = Shots(tmp_path / "screenshots")
    find = driver.find_element
    driver.get(studio.studio_url)

    # 1. the page loads: the model is ready, the characters are listed, the first one is shown
    wait_for(driver, lambda d: find(By.ID, "model-status").get_attribute("data-state") == "ready", "model ready")
    items = wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#character-list li") if len(d.find_elements(By.CSS_SELECTOR, "#character-list li")) == 9 else None, "9 characters")
    assert items[0].get_attribute("data-id") == "brom"
    wait_for(driver, lambda d: "Brom Ironhand" in find(By.ID, "character-head").text, "Brom's card")
    assert "active" in items[0].get_attribute("class")
    assert "angry" in find(By.ID, "moods").text and "friendliness 0" in find(By.ID, "moods").text
    shots.take(driver, "loaded")

    # 2. Pip: his limits, a slider moved past one, the resolved vector live with the clamp shown
    next(i for i in items if i.get_attribute("data-id") == "pip").click()
    wait_for(driver, lambda d: "Pip Greenhollow" in find(By.ID, "character-head").text, "Pip's card")
    assert "verbosity" in find(By.ID, "limits").text and "0..2" in find(By.ID, "limits").text

    def applied(name):
        return find(By.CSS_SELECTOR, f'#resolved tr[data-name="{name}"] td[data-layer="applied"]')

    wait_for(driver, lambda d: applied("verbosity").text == "1", "Pip's verbosity 1")
    slider = find(By.ID, "slider-verbosity")
    slider.send_keys(Keys.END)  # to 4, past Pip's limit of 2
    wait_for(driver, lambda d: applied("verbosity").text == "4→2", "the clamp to show")
    assert "clamped" in applied("verbosity").get_attribute("class")
    assert find(By.CSS_SELECTOR, '#resolved tr[data-name="verbosity"] td[data-layer="steer"]').text == "4"
    find(By.ID, "slider-humor").send_keys(Keys.RIGHT, Keys.RIGHT)  # 1 -> 3: within range, no clamp
    wait_for(driver, lambda d: applied("humor").text == "3", "humor 3")
    assert "clamped" not in applied("humor").get_attribute("class")
    assert find(By.ID, "resolved-labels").text.startswith("humor:3,friendliness:2,creativity:3,verbosity:2")
    shots.take(driver, "sliders")

    # 3. chat: the reply streams in more than one piece, then shows the applied vector and timing
    driver.execute_script("""
        window.__pieces = [];
        new MutationObserver(() => {
          const r = document.querySelector('#chat-log .msg.npc:last-child .text');
          if (r && r.textContent) window.__pieces.push(r.textContent);
        }).observe(document.getElementById('chat-log'), {subtree: true, childList: true, characterData: true});
    """)
    find(By.ID, "chat-input").send_keys("Have you seen my cat?", Keys.ENTER)
    reply = wait_for(driver, lambda d: d.find_element(By.CSS_SELECTOR, '#chat-log .msg.npc[data-done="1"]'), "the reply to finish")
    final = driver.execute_script("return arguments[0].textContent", reply.find_element(By.CSS_SELECTOR, ".text"))
    pieces = driver.execute_script("return window.__pieces")
    partial = [p for p in dict.fromkeys(pieces) if p != final]
    assert final.strip() and len(partial) >= 1, f"the reply arrived in one piece: {pieces!r}"
    assert all(final.startswith(p) for p in partial), (final, partial)  # it grew, piece by piece
    assert int(reply.get_attribute("data-deltas")) > 1
    meta = reply.find_element(By.CSS_SELECTOR, ".meta").text
    assert "applied humor:3,friendliness:2,creativity:3,verbosity:2" in meta and "TTFT" in meta and "tokens in" in meta
    shots.take(driver, "chat")

    # 4. compare: one line, two profiles, side by side
    find(By.CSS_SELECTOR, '.tabs [data-tab="compare"]').click()
    b_humor = find(By.CSS_SELECTOR, '[data-profile="b"] input[data-name="humor"]')
    b_humor.clear()
    b_humor.send_keys("0")
    b_verbosity = find(By.CSS_SELECTOR, '[data-profile="b"] input[data-name="verbosity"]')
    b_verbosity.clear()
    b_verbosity.send_keys("0")
    find(By.ID, "compare-input").send_keys("Where is the market?", Keys.ENTER)
    for column in ("a", "b"):
        wait_for(driver, lambda d: find(By.ID, f"compare-{column}").get_attribute("data-done") == "1", f"compare {column}")
    meta_a = find(By.CSS_SELECTOR, "#compare-a .meta").text
    meta_b = find(By.CSS_SELECTOR, "#compare-b .meta").text
    assert "applied humor:3,friendliness:2,creativity:3,verbosity:2" in meta_a
    assert "applied humor:0,friendliness:2,creativity:3,verbosity:0" in meta_b
    assert find(By.CSS_SELECTOR, "#compare-a .reply").text and find(By.CSS_SELECTOR, "#compare-b .reply").text
    assert int(find(By.ID, "compare-a").get_attribute("data-deltas")) > 1 and int(find(By.ID, "compare-b").get_attribute("data-deltas")) > 1
    shots.take(driver, "compare")

    # 5. the editor: a broken save is refused with the error at its line; a good one hot-reloads
    find(By.CSS_SELECTOR, '.tabs [data-tab="editor"]').click()
    text = find(By.ID, "editor-text")
    wait_for(driver, lambda d: "id: pip" in text.get_attribute("value"), "pip.yaml in the editor")
    original = (personas / "pip.yaml").read_text()
    assert text.get_attribute("value") == original
    broken = original.replace("  humor: 1\n", "  humor: 7\n", 1)
    line = broken.splitlines().index("  humor: 7") + 1

    def set_text(value):
        driver.execute_script("const t = arguments[0]; t.value = arguments[1]; t.dispatchEvent(new Event('input'));", text, value)

    set_text(broken)
    find(By.ID, "editor-save").click()
    expected = f"{personas / 'pip.yaml'}:{line}: attributes.humor = 7 is outside 0..4"
    wait_for(driver, lambda d: expected in find(By.ID, "editor-problems").text, "the problem under the editor")
    gutter = find(By.CSS_SELECTOR, f'#editor-gutter div[data-line="{line}"]')
    assert "error" in gutter.get_attribute("class") and gutter.get_attribute("title") == expected
    assert not find(By.CSS_SELECTOR, f'#editor-gutter div[data-line="{line + 1}"]').get_attribute("class")
    inline = find(By.CSS_SELECTOR, f'#editor-inline .inline-error[data-line="{line}"]')
    assert inline.text == f"line {line}: attributes.humor = 7 is outside 0..4" and inline.is_displayed()
    # at the right line: level with the gutter's row for it
    assert abs(inline.location["y"] - gutter.location["y"]) <= 4
    assert "refused" in find(By.ID, "editor-status").text
    assert (personas / "pip.yaml").read_text() == original
    shots.take(driver, "editor-broken")

    set_text(original.replace("name: Pip Greenhollow", "name: Pip the Brave"))
    find(By.ID, "editor-save").click()
    wait_for(driver, lambda d: "hot reload" in find(By.ID, "editor-status").text, "the save")
    wait_for(driver, lambda d: "Pip the Brave" in find(By.ID, "character-head").text, "the reloaded card")
    assert "Pip the Brave" in find(By.CSS_SELECTOR, '#character-list li[data-id="pip"]').text
    assert (personas / "pip.yaml").read_text().count("name: Pip the Brave") == 1
    assert not find(By.ID, "editor-problems").text
    shots.take(driver, "editor-saved")

    # 6. steerability: the report's table and plots
    find(By.CSS_SELECTOR, '.tabs [data-tab="steerability"]').click()
    rows = wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#steerability-table tr")[1:] or None, "the report table")
    assert [r.find_element(By.TAG_NAME, "td").text for r in rows] == ["humor", "friendliness", "creativity", "verbosity"]
    images = driver.find_elements(By.CSS_SELECTOR, "#steerability .plots img")
    assert len(images) == 4
    wait_for(driver, lambda d: all(d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", i) for i in images), "the plots")
    shots.take(driver, "steerability")

    assert not severe_console_errors(driver, expected=("/api/v1/personas/file - Failed to load resource: the server responded with a status of 400",))
    assert [p.name for p in shots.taken] == ["01-loaded.png", "02-sliders.png", "03-chat.png", "04-compare.png",
                                             "05-editor-broken.png", "06-editor-saved.png", "07-steerability.png"]  # fmt: skip


def test_the_browser_never_reaches_the_network(studio, driver):
    """Every resource the page loaded came from the studio itself."""
    driver.get(studio.studio_url)
    wait_for(driver, lambda d: d.find_elements("css selector", "#character-list li"), "the page")
    urls = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name).concat([location.href])")
    assert urls and all(u.startswith(studio.studio_url) for u in urls), urls

