"""Headless Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``): log in
through the real form, open pages, read the DOM, take screenshots. No WebDriver, no extra package.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from peers import stop, tool


class Chromium:
    """One headless Chromium with one page; ``with Chromium() as browser: browser.open(url)``."""

    def __init__(self, width: int = 1400, height: int = 1000) -> None:
        self.width, self.height = width, height
        self._id = 0
        self._buffer = b""
        self.session: str | None = None

    def __enter__(self) -> Chromium:
        executable = tool("chromium")
        self._profile = tempfile.TemporaryDirectory(prefix="dermnode-chromium-")
        to_browser, self._commands = os.pipe()
        self._replies, from_browser = os.pipe()

        def pipes_at_3_and_4() -> None:  # the child reads commands on fd 3 and writes replies on fd 4
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_browser, from_browser)]
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        self.process = subprocess.Popen(
            [executable, "--headless", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
             "--no-first-run", "--disable-extensions", "--hide-scrollbars", f"--user-data-dir={self._profile.name}",
             f"--window-size={self.width},{self.height}", "about:blank"],
            preexec_fn=pipes_at_3_and_4, pass_fds=(3, 4), start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser)
        os.close(from_browser)
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Emulation.setDeviceMetricsOverride", width=self.width, height=self.height, deviceScaleFactor=1,
                  mobile=False)
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:  # a clean close lets Chromium finish writing its profile
            self.call("Browser.close", timeout=5)
            self.process.wait(timeout=10)
        except (TimeoutError, RuntimeError, OSError, subprocess.TimeoutExpired):
            pass
        stop(self.process, timeout=5)
        self._end_process_group()
        os.close(self._commands)
        os.close(self._replies)
        self._profile.cleanup()

    def _end_process_group(self, timeout: float = 10.0) -> None:
        """Kill Chromium's helpers (renderer, zygote, crashpad), which may outlive the browser and keep
        writing into the profile, and wait (at most ``timeout`` s) until none is left."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                return
            time.sleep(0.1)
        raise RuntimeError(f"Chromium's helpers (process group {self.process.pid}) did not end in {timeout:.0f} s")

    def call(self, method: str, timeout: float = 30.0, **params: Any) -> dict:
        """Send one command and wait (at most ``timeout`` s) for its answer; events on the way are dropped."""
        self._id += 1
        message = {"id": self._id, "method": method, "params": params}
        if self.session is not None and not method.startswith("Target."):
            message["sessionId"] = self.session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            while b"\0" not in self._buffer:
                if not select.select([self._replies], [], [], max(0.0, deadline - time.monotonic()))[0]:
                    raise TimeoutError(f"{method}: no answer in {timeout:.0f} s")
                chunk = os.read(self._replies, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"{method}: Chromium closed its pipe (exit status {self.process.poll()})")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
        raise TimeoutError(f"{method}: no answer in {timeout:.0f} s")

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (awaited when it is a promise)."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 20.0) -> Any:
        """Poll a JavaScript expression until it is truthy (at most ``timeout`` s)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                value = self.evaluate(expression)
            except RuntimeError:  # the page is navigating
                value = None
            if value:
                return value
            time.sleep(0.2)
        raise TimeoutError(f"{expression!r} still false after {timeout:.0f} s")

    def open(self, url: str) -> None:
        """Go to ``url`` and wait until the page and its images have loaded."""
        self.call("Page.navigate", url=url)
        time.sleep(0.2)
        self.wait_for("document.readyState === 'complete' && location.href !== 'about:blank' "
                      "&& Array.from(document.images).every(image => image.complete)")

    def log_in(self, base: str, name: str, password: str) -> None:
        """Fill in and send the login form."""
        self.open(f"{base}/login")
        self.evaluate(f"""(() => {{
            document.querySelector('input[name=username]').value = {json.dumps(name)};
            document.querySelector('input[name=password]').value = {json.dumps(password)};
            document.querySelector('form.login').submit(); return true; }})()""")
        self.wait_for("document.readyState === 'complete' && !location.pathname.startsWith('/login')")

    def screenshot(self, path: Path, full_page: bool = True) -> Path:
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            size = self.evaluate("[document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
            params.update(captureBeyondViewport=True,
                          clip={"x": 0, "y": 0, "width": size[0], "height": min(size[1], 4000), "scale": 1})
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", **params)["data"]))
        return path
