"""Drive headless Chromium over the DevTools protocol, with the standard library alone.

Chromium's ``--remote-debugging-pipe`` reads protocol messages (JSON, each ended by a NUL byte) from file
descriptor 3 and writes its answers and events to descriptor 4; no port, no websocket, no network.

Also a script, to take the README's screenshot of a real report::

    python tests/report/headless.py REPORT/index.html docs/report.png [1400x900]
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["find_chromium", "Chromium", "Page", "BrowserError"]


class BrowserError(RuntimeError):
    """The browser answered a command with an error, or did not answer in time."""


def find_chromium() -> str | None:
    """The path of a Chromium binary (Debian's ``chromium``), or None."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _above_9(fd: int) -> int:
    high = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return high


class Chromium:
    """A headless Chromium process and its protocol pipe. Use as a context manager."""

    def __init__(self, binary: str, *, width: int = 1400, height: int = 900, timeout: float = 30.0) -> None:
        self.timeout = timeout
        self.events: list[dict[str, Any]] = []
        self._next_id = 0
        self._buffer = b""
        self._profile = tempfile.mkdtemp(prefix="zfnet-chromium-")
        self._log = tempfile.TemporaryFile()  # Chromium's stderr; a pipe nobody reads could fill and block it
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # Move the browser's ends above 9, so that putting them on 3 and 4 cannot overwrite one with the other.
        to_browser_r, from_browser_w = (_above_9(fd) for fd in (to_browser_r, from_browser_w))
        args = [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--remote-debugging-pipe", f"--user-data-dir={self._profile}", "--no-first-run",
                "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--mute-audio", "--hide-scrollbars",
                "--allow-file-access-from-files", f"--window-size={width},{height}", "about:blank"]
        # A small Python trampoline puts our pipe ends on descriptors 3 and 4, where Chromium expects them.
        trampoline = ("import os, sys; r, w = int(sys.argv[1]), int(sys.argv[2]); os.dup2(r, 3); os.dup2(w, 4); "
                      "os.close(r); os.close(w); os.execv(sys.argv[3], sys.argv[3:])")
        self.process = subprocess.Popen([sys.executable, "-c", trampoline, str(to_browser_r), str(from_browser_w),
                                         *args], pass_fds=(to_browser_r, from_browser_w),
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=self._log)
        os.close(to_browser_r)
        os.close(from_browser_w)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.send("Browser.close", timeout=5)
            except (BrowserError, OSError):
                pass
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        for fd in (self._to_browser, self._from_browser):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self._profile, ignore_errors=True)

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError("Chromium did not answer in time")
            ready, _, _ = select.select([self._from_browser], [], [], left)
            if ready:
                chunk = os.read(self._from_browser, 1 << 20)
                if not chunk:
                    self._log.seek(0)
                    err = self._log.read().decode(errors="replace")[-2000:]
                    raise BrowserError(f"Chromium closed its pipe (exit {self.process.poll()}): {err}")
                self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, params: dict[str, Any] | None = None, *, session: str | None = None,
             timeout: float | None = None) -> dict[str, Any]:
        """Send one command and return its result; events read meanwhile are kept in :attr:`events`."""
        self._next_id += 1
        ident = self._next_id
        message: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == ident:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self._keep(reply)

    def wait_for(self, method: str, *, session: str | None, since: int, timeout: float | None = None) -> dict:
        """The first event ``method`` of ``session`` at or after position ``since`` of :attr:`events`."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        position = since
        while True:
            while position < len(self.events):
                event = self.events[position]
                position += 1
                if event.get("method") == method and event.get("sessionId") == session:
                    return event
            self._keep(self._read_message(deadline))

    def _keep(self, event: dict[str, Any]) -> None:
        """Record an event; dismiss a dialog (alert) at once, or the page would wait for it forever."""
        self.events.append(event)
        if event.get("method") == "Page.javascriptDialogOpening":
            self._next_id += 1
            dismiss = {"id": self._next_id, "method": "Page.handleJavaScriptDialog", "params": {"accept": False},
                       "sessionId": event.get("sessionId")}
            os.write(self._to_browser, json.dumps(dismiss).encode() + b"\0")

    def new_page(self, *, width: int = 1400, height: int = 900) -> Page:
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable", session=session)
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}, session=session)
        return Page(self, session, target)


class Page:
    """One tab: navigation, script evaluation, real mouse clicks and key presses, screenshots."""

    def __init__(self, browser: Chromium, session: str, target: str) -> None:
        self.browser = browser
        self.session = session
        self.target = target

    def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.browser.send(method, params, session=self.session)

    def goto(self, url: str) -> None:
        since = len(self.browser.events)
        self.send("Page.navigate", {"url": url})
        self.browser.wait_for("Page.loadEventFired", session=self.session, since=since)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (promises awaited)."""
        result = self.send("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                                "returnByValue": True})
        if "exceptionDetails" in result:
            raise BrowserError(f"script failed: {result['exceptionDetails'].get('text')} "
                               f"{result['exceptionDetails'].get('exception', {}).get('description', '')}")
        return result.get("result", {}).get("value")

    def click(self, selector: str, *, navigates: bool = False) -> None:
        """Click the centre of the first element matching ``selector`` with the mouse, as a user would."""
        point = self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)}); if (!e) return null;"
            " e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();"
            " return [r.left + r.width / 2, r.top + r.height / 2]; })()")
        if point is None:
            raise BrowserError(f"nothing matches {selector!r} on {self.url()}")
        since = len(self.browser.events)
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", {"type": kind, "x": point[0], "y": point[1], "button": "left",
                                                   "clickCount": 1})
        if navigates:
            self.browser.wait_for("Page.loadEventFired", session=self.session, since=since)

    def press(self, key: str, *, navigates: bool = False) -> None:
        """Press and release a printable key (``j``, ``]``, ...)."""
        since = len(self.browser.events)
        self.send("Input.dispatchKeyEvent", {"type": "keyDown", "key": key, "text": key})
        self.send("Input.dispatchKeyEvent", {"type": "keyUp", "key": key})
        if navigates:
            self.browser.wait_for("Page.loadEventFired", session=self.session, since=since)

    def url(self) -> str:
        return str(self.evaluate("location.href"))

    def load_all_images(self) -> list[dict[str, Any]]:
        """Scroll through the page so lazy images load, then wait for every image; per image its state."""
        return self.evaluate("""(async () => {
            const frame = () => new Promise(r => setTimeout(r, 30));
            for (let y = 0; y < document.body.scrollHeight; y += window.innerHeight / 2) {
                window.scrollTo(0, y); await frame();
            }
            const images = [...document.images];
            for (const i of images) i.loading = "eager";  // a lazy image still off screen
            const settle = i => i.complete ? null : new Promise(r => {
                i.addEventListener("load", r); i.addEventListener("error", r);
            });
            await Promise.race([Promise.all(images.map(settle)), new Promise(r => setTimeout(r, 15000))]);
            window.scrollTo(0, 0);
            return images.map(i => ({src: i.getAttribute("src"), width: i.naturalWidth, complete: i.complete}));
        })()""")

    def screenshot(self, path: str | Path, *, full_page: bool = False) -> Path:
        """A PNG of the viewport, or of the whole page."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            root = "document.documentElement"
            width, height = self.evaluate(f"[{root}.scrollWidth, {root}.scrollHeight]")
            params.update(captureBeyondViewport=True,
                          clip={"x": 0, "y": 0, "width": width, "height": height, "scale": 1})
        data = self.send("Page.captureScreenshot", params)["data"]
        path = Path(path)
        path.write_bytes(base64.b64decode(data))
        return path

    def requests(self) -> list[str]:
        """The URL of every request this tab has made so far."""
        return [e["params"]["request"]["url"] for e in self.browser.events
                if e.get("sessionId") == self.session and e.get("method") == "Network.requestWillBeSent"]

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions, failed loads and dialogs (alert) seen on this tab so far."""
        found = []
        for event in self.browser.events:
            if event.get("sessionId") != self.session:
                continue
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                found.append(f"exception: {params.get('exceptionDetails', {}).get('text')}")
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                found.append(f"console.{params['type']}: {[a.get('value') for a in params.get('args', [])]}")
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                entry = params["entry"]
                found.append(f"log: {entry.get('text')} {entry.get('url', '')}")
            elif method == "Page.javascriptDialogOpening":
                found.append(f"dialog: {params.get('type')} {params.get('message')!r}")
        return found


def _main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print("usage: python tests/report/headless.py REPORT/index.html OUT.png [WIDTHxHEIGHT]", file=sys.stderr)
        return 2
    width, height = (int(v) for v in (argv[2] if len(argv) == 3 else "1400x900").split("x"))
    binary = find_chromium()
    if binary is None:
        print("no chromium on PATH (Debian: apt-get install chromium)", file=sys.stderr)
        return 1
    with Chromium(binary, width=width, height=height) as browser:
        page = browser.new_page(width=width, height=height)
        page.goto(Path(argv[0]).resolve().as_uri())
        page.load_all_images()
        page.screenshot(argv[1])
    print(f"wrote {argv[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
