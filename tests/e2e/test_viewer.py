"""The web viewer in a real browser: live editing controls reach the training run and its checkpoints.

Needs Debian's chromium and the playwright package (scripts/install.sh installs both); without chromium the browser
test fails, unless PDS_TESTS_WITHOUT_BROWSER=1 asks to skip it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import List

import pytest

from pds_nerfstudio.common.checkpoints import load_checkpoint
from pds_nerfstudio.integration.source_run import newest_checkpoint
from toy_world.runs import _ns_train_executable, find_run_dirs, offline_env, run_tiny_edit

CHROMIUM = shutil.which("chromium")
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--enable-unsafe-swiftshader", "--use-angle=swiftshader", "--disable-quic",
    "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
NEW_PROMPT = "a photo of a grizzly bear"
STEPS = 12
STATE_TIMEOUT = 600
"""Seconds a wait for a state change may take before the test fails (a loaded 2-core machine is slow)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Log:
    """Collects a process's output in the background."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.lines: List[str] = []
        self._thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self._thread.start()

    def _read(self, process: subprocess.Popen) -> None:
        for line in process.stdout:  # type: ignore[union-attr]
            self.lines.append(line)

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def wait_for(self, fragment: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while fragment not in self.text:
            assert time.monotonic() < deadline, f"{fragment!r} not seen in:\n{self.text[-3000:]}"
            time.sleep(0.2)


def wait_for_port(port: int, process: subprocess.Popen, log: Log, timeout: float) -> None:
    """Wait until the viewer's server accepts connections."""
    deadline = time.monotonic() + timeout
    while True:
        assert process.poll() is None, f"ns-train exited:\n{log.text[-3000:]}"
        assert time.monotonic() < deadline, f"no viewer on port {port}:\n{log.text[-3000:]}"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.5)


def control(page, label: str):
    """The input of the viewer control labelled ``label`` (viser puts label and input in one flex row)."""
    row = f'//label[normalize-space(text())="{label}"]/ancestor::div[contains(@class, "mantine-Flex-root")][1]'
    return page.locator(f"xpath={row}//input")


@pytest.mark.skipif(
    CHROMIUM is None and os.environ.get("PDS_TESTS_WITHOUT_BROWSER") == "1", reason="PDS_TESTS_WITHOUT_BROWSER=1"
)
def test_live_prompt_change_from_the_browser(source_run, tiny_sd, torch_home, tmp_path):
    """Fails where chromium is missing (scripts/install.sh, which scripts/test.sh runs first, installs it), unless
    PDS_TESTS_WITHOUT_BROWSER=1 says to skip."""
    assert CHROMIUM is not None, "needs Debian's chromium: run scripts/install.sh, or set PDS_TESTS_WITHOUT_BROWSER=1 to skip"
    from playwright import sync_api
    port = free_port()
    command = [
        _ns_train_executable(), "pds",
        "--load-dir", str(source_run),
        "--output-dir", str(tmp_path / "outputs"),
        "--max-num-iterations", str(STEPS),
        "--start-paused", "True",  # nothing trains until the browser resumes it
        "--vis", "viewer",
        "--viewer.websocket-port", str(port),
        "--viewer.quit-on-train-completion", "False",  # keep the viewer open when training ends
        "--machine.device-type", "cpu",
        "--pipeline.render-resolution", "16",
        "--pipeline.tgt-prompt", "a photo of a polar bear",
        "--pipeline.guidance.model-id", str(tiny_sd),
    ]  # fmt: skip
    process = subprocess.Popen(
        command, env=offline_env(torch_home), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    log = Log(process)
    try:
        wait_for_port(port, process, log, timeout=STATE_TIMEOUT)
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"http://localhost:{port}")
            page.get_by_text("Connected").wait_for(timeout=STATE_TIMEOUT * 1000)
            prompt = control(page, "Target prompt")
            prompt.wait_for(timeout=STATE_TIMEOUT * 1000)
            assert prompt.input_value() == "a photo of a polar bear"
            prompt.fill(NEW_PROMPT)
            prompt.press("Enter")
            # Each wait is for a state change and only runs out on failure: generous, for a loaded machine.
            log.wait_for(f"Target prompt changed in the viewer: '{NEW_PROMPT}'", timeout=STATE_TIMEOUT)

            pause = control(page, "Pause editing")
            pause.check()  # pause (it already is: --start-paused) ...
            # ... seen by the run before the box is cleared again: a click sent while the first is still in flight
            # can reach the server as no change at all
            log.wait_for("Editing paused in the viewer", timeout=STATE_TIMEOUT)
            pause.uncheck()  # ... and resume from the browser
            log.wait_for("Editing resumed in the viewer", timeout=STATE_TIMEOUT)
            log.wait_for("Training Finished", timeout=STATE_TIMEOUT)

            status = control(page, "Status")
            deadline = time.monotonic() + STATE_TIMEOUT
            while f"step {STEPS - 1}" not in status.input_value():
                assert time.monotonic() < deadline, status.input_value()
                time.sleep(0.5)
            assert status.input_value().startswith("pds | step")
            time.sleep(2)
            assert process.poll() is None, "the viewer must stay open after training when asked to"
            page.screenshot(path=str(tmp_path / "viewer.png"))
            browser.close()
        print(f"viewer screenshot: {tmp_path / 'viewer.png'}")
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)

    (run_dir,) = find_run_dirs(tmp_path / "outputs", "pds")
    state = load_checkpoint(newest_checkpoint(run_dir / "nerfstudio_models"))["pipeline"]
    assert state["controls._extra_state"]["tgt_prompt"] == NEW_PROMPT

    # A resumed run continues with what was set in the viewer, though its config.yml says otherwise.
    resumed, result = run_tiny_edit(
        "pds", run_dir, tmp_path / "resumed", torch_home, STEPS + 1, ["--pipeline.guidance.model-id", str(tiny_sd)]
    )
    state = load_checkpoint(newest_checkpoint(resumed / "nerfstudio_models"))["pipeline"]
    assert state["controls._extra_state"]["tgt_prompt"] == NEW_PROMPT
    assert f"Step {STEPS} uses: tgt prompt '{NEW_PROMPT}'" in result.stdout  # what the resumed step used
    assert Path(tmp_path / "viewer.png").stat().st_size > 0
