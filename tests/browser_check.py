"""Open every page of a built book in headless Chromium and report what a reader would see broken.

Chromium (Debian's ``chromium``) is driven over the Chrome DevTools Protocol on a
pipe (``--remote-debugging-pipe``: JSON messages separated by NUL bytes on file
descriptors 3 and 4), so no driver, port or extra package is needed. The site is
served over http on 127.0.0.1 so scripts behave as on the web. Requests to any
other host are refused by the browser itself, and each one is a problem: the book
must read offline, with MathJax and plotly.js served from its own ``_static/``.

For every page it reports:

- JavaScript exceptions and ``console.error`` messages;
- any request to another host than the book's (refused, and reported);
- failed requests and HTTP errors for the site's own files;
- mathematics shown as raw TeX: a Sphinx ``math`` element that MathJax did not
  typeset (no ``mjx-container`` inside), or ``\\(``, ``\\[`` or ``$$`` left in the text;
- a 3-D plotly figure (``.js-plotly-plot`` holding a canvas) that has no WebGL
  context, or whose canvas, captured from the screen, holds no pixels other than
  the background: the figure must have *drawn*, not only loaded. Chromium runs with
  SwiftShader (``--use-angle=swiftshader --enable-unsafe-swiftshader``), its software
  WebGL, since headless runs have no GPU;
- ``<img>`` elements that did not load (``naturalWidth == 0``);
- internal links to a missing file or a missing ``#anchor``;
- on chapter pages (``notebooks/``): no output figure at all, or a figure that
  was printed as ``<Figure size ...>`` text instead of drawn;
- a figure in a page's content (an ``<img>`` or a 3-D plotly figure) that is not inside a
  numbered ``<figure>`` with a caption ("Fig. 4.2 ..."; myst-nb's ``figure`` cell metadata, or
  ``{glue-figure}`` on a Markdown page), and any ``<img>`` whose alt text is empty or a file name;
- require.js or the Jupyter widget manager loaded by a page, or widget state embedded in it (a
  widget made while the notebook ran, such as ``tqdm.auto``'s progress bar or an ``interact``
  slider: nothing renders it in the book, and it is what makes myst-nb add those scripts);
- at every width checked (``--width``; 1280 px and a 390 px phone by default), any element that
  sticks out past the right edge of the screen, unless it is inside a block that scrolls
  horizontally (code, outputs, tables) and that block fits: the page must not be wider than the
  screen. The element is named with its section heading.

Usage: ``python tests/browser_check.py _build/html [--screenshots artifacts] [--width 1280,390]``.
Screenshots at widths other than 1280 px get the width in their name (``index-390px.png``).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import functools
import http.server
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    # WebGL without a GPU: SwiftShader, which recent Chromium only enables when asked
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
]
#: A 3-D figure must colour at least this fraction of its canvas differently from the background.
MIN_DRAWN_FRACTION = 0.01
# Sphinx's generated index pages have nothing of ours to check (in both editions)
SKIP_PAGES = {"search.html", "genindex.html", "zh-tw/search.html", "zh-tw/genindex.html"}
WINDOW = (1280, 960)
#: A phone in portrait (an iPhone 12 to 15 is 390 CSS pixels wide): the narrowest screen the book is checked at.
PHONE = (390, 844)
#: Full-page screenshots stop here (CSS pixels): a chapter at phone width is far longer.
MAX_SHOT_HEIGHT = 16000
#: The widths ``main`` checks by default, desktop first; each one's window height is its usual screen's.
WIDTHS = {WINDOW[0]: WINDOW, PHONE[0]: PHONE}
#: An alt text that is a file name or a content hash (myst-nb's default alt is the image's path).
FILE_NAME_ALT = re.compile(r"(^|[/\\])[\w.-]+\.(png|jpe?g|gif|svg|webp)$|_images/|^[0-9a-f]{16,}$", re.I)
#: A numbered caption: "Fig. 4.2" on a chapter, "Fig. 1" on an unnumbered page ("圖 4.2" in the zh-TW edition).
FIGURE_NUMBER = re.compile(r"^(?:Fig\.|圖)\s*\d+(\.\d+)*\b")
#: Scripts that only serve Jupyter widgets, which the book does not render (it reads offline).
WIDGET_SCRIPT = re.compile(r"require(\.min)?\.js|embed-amd|html-manager|@jupyter-widgets", re.I)


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class CDPError(RuntimeError):
    pass


class Chromium:
    """A headless Chromium and one page (tab) in it, driven over the DevTools pipe."""

    def __init__(self, executable: str, window=WINDOW, timeout: float = 30.0):
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="chromium-profile-")
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()
        # Move the child's ends above 10 so the dup2 onto 3 and 4 below cannot clobber one another.
        high_r = fcntl.fcntl(to_child_r, fcntl.F_DUPFD_CLOEXEC, 10)
        high_w = fcntl.fcntl(from_child_w, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(to_child_r), os.close(from_child_w)

        def wire_pipes():  # runs in the child before exec; dup2 leaves 3 and 4 inheritable
            os.dup2(high_r, 3)
            os.dup2(high_w, 4)

        self.proc = subprocess.Popen(
            [
                executable,
                *CHROMIUM_FLAGS,
                "--remote-debugging-pipe",
                f"--user-data-dir={self.profile}",
                "--hide-scrollbars",
                "--mute-audio",
                f"--window-size={window[0]},{window[1]}",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            close_fds=False,
            preexec_fn=wire_pipes,
        )
        os.close(high_r), os.close(high_w)
        self._next_id = 0
        self.allowed = "http://127.0.0.1:"  # the only origin pages may load from (set to the site's by check_site)
        self.blocked: list[str] = []
        self.session = None
        self._replies: dict[int, queue.Queue] = {}
        self.events: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable", session=True)
        self.send(
            "Emulation.setDeviceMetricsOverride",
            session=True,
            width=window[0],
            height=window[1],
            deviceScaleFactor=1,
            mobile=window[0] < 600,  # a phone: the page's viewport meta tag applies, as on a real phone
        )
        self.width = window[0]
        # Refuse every request not for the local site: the check must never use the network.
        self.send("Fetch.enable", session=True, patterns=[{"urlPattern": "*"}])

    def _read(self):
        buf = b""
        while True:
            try:
                chunk = os.read(self._from_child, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                self.events.put(None)
                return
            buf += chunk
            *messages, buf = buf.split(b"\0")
            for raw in messages:
                msg = json.loads(raw)
                if msg.get("method") == "Fetch.requestPaused":
                    self._route(msg["params"])  # answered here: the page's load waits on it
                elif "id" in msg:
                    self._replies.setdefault(msg["id"], queue.Queue()).put(msg)
                else:
                    self.events.put(msg)

    def _route(self, params):
        url = params["request"]["url"]
        if url.startswith((self.allowed, "data:")):
            self._post("Fetch.continueRequest", True, {"requestId": params["requestId"]})
        else:
            self.blocked.append(url)
            self._post("Fetch.failRequest", True, {"requestId": params["requestId"], "errorReason": "BlockedByClient"})

    def _post(self, method: str, session: bool, params: dict) -> int:
        with self._lock:
            self._next_id += 1
            mid = self._next_id
            self._replies.setdefault(mid, queue.Queue())
            msg = {"id": mid, "method": method, "params": params}
            if session:
                msg["sessionId"] = self.session
            os.write(self._to_child, json.dumps(msg).encode() + b"\0")
        return mid

    def send(self, method: str, session: bool = False, **params):
        mid = self._post(method, session, params)
        try:
            reply = self._replies[mid].get(timeout=self.timeout)
        except queue.Empty:
            raise CDPError(f"Chromium did not answer {method} within {self.timeout} s") from None
        finally:
            self._replies.pop(mid, None)
        if "error" in reply:
            raise CDPError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def close(self):
        with contextlib.suppress(CDPError, OSError):
            self.send("Browser.close")
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._to_child, self._from_child):
            with contextlib.suppress(OSError):
                os.close(fd)
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class Site:
    """``site_dir`` served on 127.0.0.1 at a free port, in a background thread."""

    def __init__(self, site_dir: Path):
        handler = functools.partial(QuietHandler, directory=str(site_dir))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@dataclass
class PageReport:
    path: str
    width: int = WINDOW[0]
    problems: list[str] = field(default_factory=list)
    images: int = 0
    output_figures: int = 0
    external_links: list[str] = field(default_factory=list)
    blocked_requests: list[str] = field(default_factory=list)
    math: int = 0
    webgl_figures: list[float] = field(default_factory=list)  # fraction of drawn pixels of each 3-D figure


@dataclass
class Report:
    pages: list[PageReport]
    screenshots: list[Path]

    @property
    def problems(self) -> list[str]:
        return [f"{_where(p)}: {problem}" for p in self.pages for problem in p.problems]


def _where(page: PageReport) -> str:
    return page.path if page.width == WINDOW[0] else f"{page.path} at {page.width} px"


# Runs in the page once it has loaded: what the reader's browser has, as plain JSON.
PAGE_FACTS_JS = r"""
(() => {
  const imgs = [...document.images].map(i => ({src: i.currentSrc || i.getAttribute('src') || '',
      complete: i.complete, width: i.naturalWidth, output: !!i.closest('.cell_output')}));
  const links = [...document.querySelectorAll('a[href]')].map(a => a.href);
  const figureText = [...document.querySelectorAll('.cell_output pre, .cell_output .output')]
      .map(e => e.textContent).filter(t => /^\s*<Figure size [^>]*>\s*$/m.test(t));
  const ids = [...document.querySelectorAll('[id]')].map(e => e.id)
      .concat([...document.querySelectorAll('a[name]')].map(a => a.name));
  const heading = e => {  // the title of the section an element is in, to say where it is
    const h = e.closest('section')?.querySelector('h1, h2, h3, h4');
    return h ? h.textContent.replace(/[#¶]\s*$/, '').trim().slice(0, 70) : '';
  };
  // every picture in the page's content (images, 3-D figures) and the numbered caption around it
  const article = document.querySelector('.bd-article');
  const figures = article ? [...article.querySelectorAll('img, .js-plotly-plot')].map(e => {
    const fig = e.closest('figure');
    const caption = fig && fig.querySelector(':scope > figcaption');
    return {kind: e.tagName === 'IMG' ? 'image' : '3-D figure', section: heading(e),
            number: caption?.querySelector('.caption-number')?.textContent.trim() || '',
            caption: caption?.querySelector('.caption-text')?.textContent.trim() || ''};
  }) : [];
  const alts = [...document.images].map(i => ({alt: i.getAttribute('alt'), section: heading(i),
      src: (i.getAttribute('src') || '').slice(0, 80)}));
  const scripts = [...document.scripts].map(s => s.src).filter(Boolean);
  const widgetState = [...document.querySelectorAll('script[type="application/vnd.jupyter.widget-state+json"]')]
      .map(s => s.textContent.length);
  return JSON.stringify({imgs, links, figureText, ids, href: location.href, figures, alts, scripts, widgetState});
})()
"""

# Elements that stick out past the right edge of the screen. An element inside a block that scrolls
# horizontally (a code cell, an output, a table's scroll container) is fine when that block itself fits.
# A block that clips instead (overflow: hidden, as the theme's admonitions do) cuts its content off:
# in the page's content that is a problem too, reported as cut off. html and body do not count, since
# overflow there widens (or cuts) the page itself. Fixed elements entirely off screen are closed drawers
# (the theme's sidebars on a phone); outside the content, the theme's own clipping is left alone.
OVERFLOW_FACTS_JS = r"""
(() => {
  const W = document.documentElement.clientWidth;
  const root = e => e === document.body || e === document.documentElement;
  const container = e => {
    for (let a = e.parentElement; a && !root(a); a = a.parentElement) {
      const o = getComputedStyle(a).overflowX;
      if (o !== 'visible') return {box: a, scrolls: o === 'auto' || o === 'scroll'};
    }
    return null;
  };
  const fixed = e => { for (let a = e; a && !root(a); a = a.parentElement) {
      if (getComputedStyle(a).position === 'fixed') return true; } return false; };
  const heading = e => {
    const h = e.closest('section')?.querySelector('h1, h2, h3, h4');
    return h ? h.textContent.replace(/[#¶]\s*$/, '').trim().slice(0, 70) : '';
  };
  // how far the element's own text reaches: a long line spills out of a block whose box fits
  const textRight = e => {
    let right = -Infinity;
    for (const n of e.childNodes) {
      if (n.nodeType !== Node.TEXT_NODE || !n.textContent.trim()) continue;
      const range = document.createRange();
      range.selectNodeContents(n);
      right = Math.max(right, range.getBoundingClientRect().right);
    }
    return right;
  };
  // how far an element reaches: its box, and its text unless it scrolls that text itself
  const reach = e => {
    const r = e.getBoundingClientRect();
    return getComputedStyle(e).overflowX === 'visible' ? Math.max(r.right, textRight(e)) : r.right;
  };
  const offenders = new Set(), cut = new Set();
  for (const e of document.body.querySelectorAll('*')) {
    const r = e.getBoundingClientRect();
    if (r.width === 0 || r.height === 0) continue;
    const spills = r.right <= W + 1 && e.scrollWidth > e.clientWidth + 1 && reach(e) > W + 1;
    if (r.right <= W + 1 && !spills) continue;
    const style = getComputedStyle(e);
    if (style.visibility === 'hidden' || style.display === 'none') continue;
    if (e.closest('mjx-assistive-mml')) continue;  // MathJax's copy for screen readers, clipped to nothing
    if (fixed(e) && r.left >= W - 1) continue;
    const holder = container(e);
    if (holder && holder.box.getBoundingClientRect().right <= W + 1) continue;  // scrolls, or clips (below)
    offenders.add(e);
  }
  // content cut off by a block of the page's content that clips (overflow hidden) instead of scrolling
  const article = document.querySelector('.bd-article');
  for (const c of article ? article.querySelectorAll('*') : []) {
    if (!['hidden', 'clip'].includes(getComputedStyle(c).overflowX)) continue;
    const edge = c.getBoundingClientRect().right;
    for (const e of c.querySelectorAll('*')) {
      const r = e.getBoundingClientRect();
      if (r.width === 0 || r.height === 0 || e.closest('mjx-assistive-mml') || container(e).box !== c) continue;
      if (reach(e) > edge + 1 && getComputedStyle(e).visibility !== 'hidden') cut.add(e);
    }
  }
  // name the outermost ones: the element that sticks out, not each of its children
  const describe = found => [...found].filter(e => !found.has(e.parentElement)).slice(0, 8).map(e => {
    const r = e.getBoundingClientRect();
    const cls = [...e.classList].slice(0, 3).map(c => '.' + c).join('');
    const right = reach(e);
    return {element: e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') + cls, right: Math.round(right),
            text: (e.textContent || '').trim().replace(/\s+/g, ' ').slice(0, 50), section: heading(e)};
  });
  return JSON.stringify({width: W, offenders: describe(offenders), cut: describe(cut)});
})()
"""


# Waits for MathJax (when the page loads it) to finish, then finds what it left untypeset.
MATH_FACTS_JS = r"""
(async () => {
  const mj = window.MathJax;
  if (mj && mj.startup && mj.startup.promise) {
    try { await mj.startup.promise; } catch (e) {}
  }
  const maths = [...document.querySelectorAll('.math')];
  const raw = maths.filter(e => !e.querySelector('mjx-container')).map(e => e.textContent.trim().slice(0, 60));
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT, {acceptNode: n =>
      n.parentElement.closest('pre, code, script, style, textarea, mjx-container, .math')
          ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT});
  const leftover = [];
  while (walker.nextNode()) {
    const t = walker.currentNode.textContent;
    if (/\\\(|\\\[|\$\$/.test(t)) leftover.push(t.trim().slice(0, 60));
  }
  return JSON.stringify({count: maths.length, raw, leftover, mathjax: !!(mj && mj.startup)});
})()
"""

# The 3-D figures: each plotly plot with a canvas, whether that canvas has a WebGL context, and its box.
WEBGL_FACTS_JS = r"""
JSON.stringify([...document.querySelectorAll('.js-plotly-plot')].filter(p => p.querySelector('canvas')).map(p => {
  const canvases = [...p.querySelectorAll('canvas')];
  const gl = canvases.find(c => {
    try { return !!(c.getContext('webgl') || c.getContext('webgl2')); } catch (e) { return false; }
  });
  const box = (gl || canvases[0]).getBoundingClientRect();
  // what shows where nothing is drawn: the first opaque background from the canvas up, else white
  let bg = [255, 255, 255];
  for (let e = gl || canvases[0]; e; e = e.parentElement) {
    const m = getComputedStyle(e).backgroundColor.match(/rgba?\(([\d.]+), ([\d.]+), ([\d.]+)(?:, ([\d.]+))?\)/);
    if (m && (m[4] === undefined || +m[4] > 0.5)) { bg = [+m[1], +m[2], +m[3]]; break; }
  }
  return {id: p.id, webgl: !!gl, bg, x: box.left + window.scrollX, y: box.top + window.scrollY,
          w: box.width, h: box.height};
}))
"""

# Counts the pixels of a PNG (a data: URL) that differ from the background [r, g, b].
DRAWN_FRACTION_JS = r"""
(async (src, bg) => {
  const img = new Image();
  img.src = src;
  await img.decode();
  const c = document.createElement('canvas');
  c.width = img.width; c.height = img.height;
  const ctx = c.getContext('2d');
  ctx.drawImage(img, 0, 0);
  const d = ctx.getImageData(0, 0, c.width, c.height).data;
  let drawn = 0;
  for (let i = 0; i < d.length; i += 4) {
    if (Math.abs(d[i] - bg[0]) + Math.abs(d[i + 1] - bg[1]) + Math.abs(d[i + 2] - bg[2]) > 48) drawn++;
  }
  return drawn / (d.length / 4);
})
"""


def _check_math(browser: Chromium, report: PageReport) -> None:
    math = json.loads(
        browser.send(
            "Runtime.evaluate",
            session=True,
            expression=MATH_FACTS_JS,
            awaitPromise=True,
            returnByValue=True,
            timeout=browser.timeout * 1000,
        )["result"]["value"]
    )
    report.math = math["count"]
    for tex in math["raw"][:5]:
        report.problems.append(f"maths shown as raw TeX (MathJax did not typeset it): {tex}")
    if len(math["raw"]) > 5:
        report.problems.append(f"... and {len(math['raw']) - 5} more untypeset maths")
    for text in math["leftover"][:5]:
        report.problems.append(f"raw TeX delimiters in the text: {text}")


def _check_webgl(browser: Chromium, report: PageReport, screenshot: Path | None) -> None:
    plots = json.loads(
        browser.send("Runtime.evaluate", session=True, expression=WEBGL_FACTS_JS, returnByValue=True)["result"]["value"]
    )
    for i, plot in enumerate(plots):
        name = plot["id"] or f"#{i}"
        if not plot["webgl"]:
            report.problems.append(f"3-D figure {name} has no WebGL context (WebGL unavailable?)")
            continue
        if plot["w"] < 10 or plot["h"] < 10:
            report.problems.append(f"3-D figure {name} has an empty canvas ({plot['w']:.0f} x {plot['h']:.0f} px)")
            continue
        browser.send(
            "Runtime.evaluate",
            session=True,
            expression=(f"window.scrollTo({{top: {max(plot['y'] - 100, 0)}, behavior: 'instant'}})"),
        )  # the theme scrolls smoothly
        time.sleep(1.0)  # let WebGL draw the frame now on screen
        clip = {"x": plot["x"], "y": plot["y"], "width": plot["w"], "height": plot["h"], "scale": 1}
        shot = browser.send(
            "Page.captureScreenshot", session=True, format="png", clip=clip, captureBeyondViewport=False
        )["data"]
        fraction = browser.send(
            "Runtime.evaluate",
            session=True,
            awaitPromise=True,
            returnByValue=True,
            expression=f"({DRAWN_FRACTION_JS})('data:image/png;base64,{shot}', {json.dumps(plot['bg'])})",
        )["result"]["value"]
        report.webgl_figures.append(fraction)
        if fraction < MIN_DRAWN_FRACTION:
            report.problems.append(
                f"3-D figure {name} drew nothing: {fraction:.2%} of its canvas differs from "
                f"the background (needs {MIN_DRAWN_FRACTION:.0%})"
            )
        if screenshot is not None and i == 0:
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            path = screenshot.with_name(screenshot.stem + "-3d.png")
            _screenshot(browser, path)
    if plots:  # back to the top, where the page's own screenshot is taken
        browser.send("Runtime.evaluate", session=True, expression="window.scrollTo({top: 0, behavior: 'instant'})")
        time.sleep(0.3)


def site_pages(site_dir: Path) -> list[str]:
    pages = []
    for path in sorted(site_dir.rglob("*.html")):
        rel = path.relative_to(site_dir)
        if any(part.startswith("_") for part in rel.parts) or rel.as_posix() in SKIP_PAGES:
            continue
        pages.append(rel.as_posix())
    return pages


@functools.cache
def _ids_in_file(path: Path) -> frozenset:
    text = path.read_text(errors="replace")
    return frozenset(re.findall(r"""\s(?:id|name)=["']([^"']+)["']""", text))


def _check_link(site_dir: Path, base: str, page: str, href: str, page_ids: set) -> str | None:
    """A problem with an internal link, or None when it resolves (file, and anchor when given)."""
    parts = urlsplit(href)
    rel = unquote(parts.path)[len(urlsplit(base).path) :]
    target = site_dir / rel
    if rel == "" or rel.endswith("/"):
        target = target / "index.html"
    if not target.is_file():
        return f"broken link to {rel or '/'} (no such file)"
    if parts.fragment:
        anchor = unquote(parts.fragment)
        same_page = rel == page
        ids = page_ids if same_page else _ids_in_file(target) if target.suffix == ".html" else None
        if ids is not None and anchor not in ids:
            return f"broken link to {rel}#{anchor} (no such anchor)"
    return None


def check_page(
    browser: Chromium,
    site: Site,
    site_dir: Path,
    page: str,
    settle: float = 0.5,
    screenshot: Path | None = None,
    full_page: bool = False,
) -> PageReport:
    report = PageReport(page, width=getattr(browser, "width", WINDOW[0]))
    while not browser.events.empty():  # drop events left over from the previous page
        browser.events.get_nowait()
    browser.blocked.clear()
    url = site.base + page
    requests: dict[str, str] = {}
    local = site.base.rstrip("/")
    # Chromium asks every site for /favicon.ico on its own; the book declares no icon, which is fine.
    ignored = {site.base + "favicon.ico"}
    browser.send("Page.navigate", session=True, url=url)
    loaded, deadline, quiet_since = False, time.monotonic() + browser.timeout, None
    pending = set()
    while time.monotonic() < deadline:
        try:
            event = browser.events.get(timeout=0.1)
        except queue.Empty:
            event = None
        if event is None:
            if loaded and not pending:
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since >= settle:
                    break
            if browser.proc.poll() is not None:
                raise CDPError("Chromium exited")
            continue
        quiet_since = None
        method, params = event.get("method"), event.get("params", {})
        if method == "Page.loadEventFired":
            loaded = True
        elif method == "Network.requestWillBeSent":
            requests[params["requestId"]] = params["request"]["url"]
            pending.add(params["requestId"])
        elif method == "Network.loadingFinished":
            pending.discard(params["requestId"])
        elif method == "Network.responseReceived":
            resp = params["response"]
            if resp["url"].startswith(local) and resp["status"] >= 400 and resp["url"] not in ignored:
                report.problems.append(f"HTTP {resp['status']} for {resp['url'][len(local) :]}")
        elif method == "Network.loadingFailed":
            pending.discard(params["requestId"])
            failed = requests.get(params["requestId"], "")
            if failed.startswith(local) and not params.get("canceled") and failed not in ignored:
                report.problems.append(f"request failed ({params.get('errorText')}) for {failed[len(local) :]}")
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text", "")
            report.problems.append(f"JavaScript exception: {text.splitlines()[0] if text else details}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            report.problems.append(f"console.error: {text}")
        elif method == "Log.entryAdded":
            entry = params["entry"]
            if entry.get("level") == "error" and entry.get("url", "").startswith(local) and entry["url"] not in ignored:
                report.problems.append(f"browser error: {entry.get('text')} ({entry['url'][len(local) :]})")
    else:
        report.problems.append(f"page did not finish loading within {browser.timeout} s")

    report.blocked_requests = list(browser.blocked)
    for blocked in sorted(set(report.blocked_requests)):
        report.problems.append(f"request to another host (refused; the book must read offline): {blocked[:120]}")
    _check_math(browser, report)
    _check_webgl(browser, report, screenshot)
    facts = json.loads(
        browser.send("Runtime.evaluate", session=True, expression=PAGE_FACTS_JS, returnByValue=True)["result"]["value"]
    )
    report.images = len(facts["imgs"])
    for img in facts["imgs"]:
        if not img["complete"] or img["width"] == 0:
            report.problems.append(
                f"image did not load: {img['src'][len(local) :] if img['src'].startswith(local) else img['src']}"
            )
    report.output_figures = sum(1 for img in facts["imgs"] if img["output"] and img["width"] > 0)
    if page.startswith("notebooks/"):
        if report.output_figures == 0:
            report.problems.append("chapter page shows no output figure")
        for text in facts["figureText"]:
            report.problems.append(f"figure printed as text instead of drawn: {text.strip()[:80]}")
    _check_figures(report, facts)
    _check_widgets(report, facts)
    _check_overflow(browser, report)
    page_ids = set(facts["ids"])
    shown = unquote(urlsplit(facts["href"]).path)[len(urlsplit(site.base).path) :]  # after any redirect
    seen = set()
    for href in facts["links"]:
        if not href.startswith(site.base):
            if href.startswith("http"):
                report.external_links.append(href)
            continue
        if href in seen:
            continue
        seen.add(href)
        problem = _check_link(site_dir, site.base, shown, href, page_ids)
        if problem:
            report.problems.append(problem)
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        _screenshot(browser, screenshot, full_page)
        if (
            report.output_figures and not full_page
        ):  # and one of the first figure, which the top of a chapter does not show
            browser.send(
                "Runtime.evaluate",
                session=True,
                expression=("document.querySelector('.cell_output img').scrollIntoView({block: 'center'})"),
            )
            time.sleep(0.3)
            _screenshot(browser, screenshot.with_name(screenshot.stem + "-figure.png"))
    return report


def _in(section: str) -> str:
    return f' (in "{section}")' if section else ""


def _check_figures(report: PageReport, facts: dict) -> None:
    """Every picture in the content is a numbered figure with a caption; every image has a real alt text."""
    for i, fig in enumerate(facts["figures"], 1):
        if not FIGURE_NUMBER.match(fig["number"]) or not fig["caption"]:
            got = (
                f"caption {fig['number'] or 'unnumbered'}: {fig['caption'][:40]!r}" if fig["caption"] else "no caption"
            )
            report.problems.append(
                f"{fig['kind']} {i} is not a numbered figure with a caption ({got}){_in(fig['section'])}; "
                "give its cell myst-nb's figure metadata (caption and name)"
            )
    for img in facts["alts"]:
        alt = (img["alt"] or "").strip()
        if not alt or FILE_NAME_ALT.search(alt):
            has = f"a file name as alt text ({alt[:50]!r})" if alt else "no alt text"
            report.problems.append(f"image {img['src'][:60]!r} has {has}{_in(img['section'])}; say what it shows")


def _check_widgets(report: PageReport, facts: dict) -> None:
    for src in facts["scripts"]:
        if WIDGET_SCRIPT.search(src):
            report.problems.append(f"loads a Jupyter widget script the book does not need: {src[:100]}")
    for size in facts["widgetState"]:
        report.problems.append(
            f"embeds Jupyter widget state ({size / 1000:.0f} kB) that nothing renders: a widget was made when the "
            "notebook ran (tqdm.auto's progress bar, an ipywidgets slider); myst-nb adds require.js for it"
        )


def _check_overflow(browser: Chromium, report: PageReport) -> None:
    facts = json.loads(
        browser.send("Runtime.evaluate", session=True, expression=OVERFLOW_FACTS_JS, returnByValue=True)["result"][
            "value"
        ]
    )
    for e in facts["cut"]:
        report.problems.append(
            f"cut off at {facts['width']} px: <{e['element']}> runs past the right edge of a block that clips "
            f"instead of scrolling{_in(e['section'])}: {e['text']!r}"
        )
    for e in facts["offenders"]:
        report.problems.append(
            f"wider than the {facts['width']} px screen: <{e['element']}> reaches {e['right']} px"
            f"{_in(e['section'])}: {e['text']!r}"
        )


def _screenshot(browser: Chromium, path: Path, full_page: bool = False) -> None:
    if not full_page:
        shot = browser.send("Page.captureScreenshot", session=True, format="png")
        path.write_bytes(base64.b64decode(shot["data"]))
        return
    # The whole page as a reader scrolls through it, one screen at a time, stitched (capped: chapters are
    # long). Capturing beyond the viewport instead lays the page out for a screen as tall as the page.
    import io

    from PIL import Image

    metrics = browser.send("Page.getLayoutMetrics", session=True)
    screen = metrics["cssLayoutViewport"]["clientHeight"]
    height = min(metrics["cssContentSize"]["height"], MAX_SHOT_HEIGHT)
    sheet, header = None, 100  # past the first screen, leave out the top strip, where the theme's header sticks
    for top in range(0, int(height), screen - header):
        browser.send(
            "Runtime.evaluate", session=True, expression=f"window.scrollTo({{top: {top}, behavior: 'instant'}})"
        )
        time.sleep(0.2)
        y = browser.send("Runtime.evaluate", session=True, expression="window.scrollY", returnByValue=True)
        y = int(y["result"]["value"])
        data = browser.send("Page.captureScreenshot", session=True, format="png")["data"]
        shot = Image.open(io.BytesIO(base64.b64decode(data)))
        if sheet is None:
            sheet = Image.new("RGB", (shot.width, int(height)), "white")
        cut = 0 if top == 0 else header
        sheet.paste(shot.crop((0, cut, shot.width, shot.height)), (0, y + cut))
    sheet.save(path)
    browser.send("Runtime.evaluate", session=True, expression="window.scrollTo({top: 0, behavior: 'instant'})")


def shot_at(path: Path, width: int) -> Path:
    """Where the screenshot ``path`` (named for the desktop width) goes at ``width``."""
    return path if width == WINDOW[0] else path.with_name(f"{path.stem}-{width}px{path.suffix}")


def check_site(
    site_dir: Path,
    chromium: str | None = None,
    screenshots: dict[str, Path] | None = None,
    pages: list[str] | None = None,
    widths: tuple[int, ...] = (WINDOW[0],),
    full_page: bool = False,
) -> Report:
    """Check every page of ``site_dir`` at each of ``widths`` (CSS pixels).

    ``screenshots`` maps page -> PNG path to save; at widths other than 1280 px the width goes into the
    file name (``shot_at``). ``full_page`` makes them show the whole page instead of its top.
    """
    site_dir = Path(site_dir).resolve()
    chromium = chromium or find_chromium()
    if chromium is None:
        raise FileNotFoundError("no Chromium found (Debian: apt-get install chromium)")
    screenshots = screenshots or {}
    _ids_in_file.cache_clear()
    pages = pages or site_pages(site_dir)
    site = Site(site_dir)
    reports, shots = [], []
    try:
        for width in widths:
            with Chromium(chromium, window=WIDTHS.get(width, (width, WINDOW[1]))) as browser:
                browser.allowed = site.base
                for page in pages:
                    shot = shot_at(screenshots[page], width) if page in screenshots else None
                    reports.append(check_page(browser, site, site_dir, page, screenshot=shot, full_page=full_page))
                    if shot is not None:
                        shots.append(shot)
    finally:
        site.close()
    return Report(reports, shots)


def main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("site", type=Path, help="the built HTML, e.g. _build/html")
    parser.add_argument("--screenshots", type=Path, help="folder for screenshots of every page")
    parser.add_argument(
        "--width",
        default=",".join(str(w) for w in WIDTHS),
        help="screen widths in CSS pixels to check (and take screenshots) at, comma-separated (default: %(default)s)",
    )
    parser.add_argument("--full-page", action="store_true", help="screenshots of whole pages, not their top")
    args = parser.parse_args(argv)
    widths = tuple(int(w) for w in args.width.split(","))
    pages = site_pages(args.site)
    shots = (
        {p: args.screenshots / (p.replace("/", "-").removesuffix(".html") + ".png") for p in pages}
        if args.screenshots
        else None
    )
    report = check_site(args.site, screenshots=shots, widths=widths, full_page=args.full_page)
    for page in report.pages:
        print(
            f"{_where(page)}: {page.images} images ({page.output_figures} output figures), {page.math} maths, "
            f"{len(page.webgl_figures)} 3-D figures, {len(page.blocked_requests)} external requests refused, "
            f"{len(page.problems)} problems"
        )
    for problem in report.problems:
        print("PROBLEM", problem)
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
