"""A headless Chromium driven over its DevTools pipe: open a local page, read what the browser saw, screenshot it.

Chromium started with --remote-debugging-pipe reads DevTools protocol commands (JSON, each ended by a NUL
byte) on its file descriptor 3 and writes answers and events on 4; no websocket, no extra package.
Protocol: https://chromedevtools.github.io/devtools-protocol/ (Target, Page, Runtime, Log, Emulation, Input).
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from contextlib import suppress
from pathlib import Path
from typing import Self

# What a page shows the reader, read in the page: images that did not decode, elements that stick out past the
# viewport (unless a box that scrolls or clips holds them), every link's target, and the page's width.
INSPECT = """(() => {
  const clipped = el => { for (let p = el.parentElement; p; p = p.parentElement) {
      const o = getComputedStyle(p).overflowX; if (o === 'auto' || o === 'scroll' || o === 'hidden') return true; }
    return false; };
  const wide = [...document.querySelectorAll('body *')].filter(el => {
      const r = el.getBoundingClientRect(); return r.width > 0 && r.right > innerWidth + 1 && !clipped(el); })
    .map(el => el.tagName.toLowerCase() + (el.className ? '.' + el.className : '') + ' right=' +
         Math.round(el.getBoundingClientRect().right));
  return {width: innerWidth, scrollWidth: document.documentElement.scrollWidth, wide: wide.slice(0, 10),
          images: [...document.images].map(i => ({alt: i.alt, ok: i.complete && i.naturalWidth > 0})),
          links: [...document.querySelectorAll('a[href]')].map(a => a.href),
          ids: [...document.querySelectorAll('[id]')].map(e => e.id),
          charset: document.characterSet, title: document.title};
})()"""

OPEN_ALL = (
    "document.querySelectorAll('details').forEach(d => d.open = true); document.querySelectorAll('details').length"
)


def _above_4(fd: int) -> int:
    high = fcntl.fcntl(fd, fcntl.F_DUPFD, 5)
    os.close(fd)
    return high


def chromium() -> str | None:
    """The Chromium binary on PATH (Debian's chromium, or chromium-browser / google-chrome), or None."""
    return next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


class Browser:
    """One headless Chromium; `page(url, width)` opens a tab at that viewport width. Use as a context manager."""

    def __init__(self, binary: str, timeout_s: float = 60):
        self.timeout_s = timeout_s
        self.profile = tempfile.mkdtemp(prefix="ssmpipe-chromium-")
        to_browser, self._write = os.pipe()  # fd 3 in the browser: commands
        self._read, from_browser = os.pipe()  # fd 4 in the browser: answers and events
        # above 4, so that putting one on 3 in the child cannot overwrite the other
        to_browser, from_browser = (_above_4(fd) for fd in (to_browser, from_browser))
        args = [
            binary,
            "--headless",
            "--remote-debugging-pipe",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            "--hide-scrollbars",
            "--mute-audio",
            "--allow-file-access-from-files",
            f"--user-data-dir={self.profile}",
            "about:blank",
        ]
        # fd 3 and 4 as the child sees them: dup2 in the child, before exec (the tests start it from one thread)
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(3, 4),
            preexec_fn=lambda: (os.dup2(to_browser, 3), os.dup2(from_browser, 4)),
        )  # noqa: PLW1509
        os.close(to_browser)
        os.close(from_browser)
        self._buffer, self._next_id, self.events = b"", 0, []

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        with suppress(OSError, RuntimeError, TimeoutError):
            self.send("Browser.close")
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._write, self._read):
            with suppress(OSError):
                os.close(fd)
        shutil.rmtree(self.profile, ignore_errors=True)

    def send(self, method: str, session: str | None = None, **params) -> dict:
        """Send one command; return its result (events that arrive meanwhile go to self.events)."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._receive()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, method: str, session: str) -> dict:
        """The first event `method` of the session not yet seen (kept in self.events too)."""
        seen = len(self.events)
        for event in self.events[:seen]:
            if event.get("method") == method and event.get("sessionId") == session and not event.get("_taken"):
                event["_taken"] = True
                return event
        while True:
            event = self._receive()
            self.events.append(event)
            if event.get("method") == method and event.get("sessionId") == session:
                event["_taken"] = True
                return event

    def _receive(self) -> dict:
        deadline = time.monotonic() + self.timeout_s
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._read], [], [], left)[0]:
                raise TimeoutError(f"Chromium did not answer within {self.timeout_s} s (exit {self.proc.poll()})")
            chunk = os.read(self._read, 1 << 20)
            if not chunk:
                raise RuntimeError(f"Chromium closed its DevTools pipe (exit {self.proc.wait()})")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def page(self, url: str, width: int, height: int = 900) -> Page:
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable", session)
        self.send(
            "Emulation.setDeviceMetricsOverride", session, width=width, height=height, deviceScaleFactor=1, mobile=False
        )
        self.send("Page.navigate", session, url=url)
        self.wait_for("Page.loadEventFired", session)
        return Page(self, session, target)


class Page:
    """An open tab: what it logged, what INSPECT finds in it, a full-height screenshot."""

    def __init__(self, browser: Browser, session: str, target: str):
        self.browser, self.session, self.target = browser, session, target

    def evaluate(self, expression: str):
        result = self.browser.send(
            "Runtime.evaluate", self.session, expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:60]}...: {result['exceptionDetails']}")
        return result["result"].get("value")

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and the browser's own error log lines (a failed load) of this tab."""
        self.evaluate("0")  # a round trip, so every event the page sent before it has arrived
        out = []
        for e in self.browser.events:
            if e.get("sessionId") != self.session:
                continue
            p = e.get("params", {})
            if e["method"] == "Runtime.consoleAPICalled" and p["type"] in ("error", "assert"):
                out.append("console: " + " ".join(str(a.get("value", a.get("description"))) for a in p["args"]))
            elif e["method"] == "Runtime.exceptionThrown":
                out.append("exception: " + p["exceptionDetails"].get("text", ""))
            elif e["method"] == "Log.entryAdded" and p["entry"]["level"] == "error":
                out.append(f"log: {p['entry']['text']} ({p['entry'].get('url', '')})")
        return out

    def click(self, selector: str) -> None:
        """A real mouse click (pressed and released) at the middle of the first element `selector` finds, scrolled
        into view first."""
        box = self.evaluate(
            f"(() => {{ const el = document.querySelector({json.dumps(selector)});"
            " el.scrollIntoView({block: 'center'}); const r = el.getBoundingClientRect();"
            " return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        for kind in ("mousePressed", "mouseReleased"):
            self.browser.send(
                "Input.dispatchMouseEvent", self.session, type=kind, x=box[0], y=box[1], button="left", clickCount=1
            )

    def type(self, selector: str, text: str) -> None:
        """Focus the first element `selector` finds (a click) and type `text` into it, as a keyboard would."""
        self.click(selector)
        self.browser.send("Input.insertText", self.session, text=text)

    def inspect(self) -> dict:
        return self.evaluate(INSPECT)

    def screenshot(self, path: Path) -> None:
        """The whole page, its full height, as a PNG."""
        png = self.browser.send("Page.captureScreenshot", self.session, format="png", captureBeyondViewport=True)
        Path(path).write_bytes(base64.b64decode(png["data"]))

    def close(self) -> None:
        self.browser.send("Target.closeTarget", targetId=self.target)
