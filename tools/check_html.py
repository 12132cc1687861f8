"""Open every page of the built HTML book in headless Chromium and check what a reader sees.

Usage (from the repository root, after the HTML is built)::

    python -m tools.check_html _build/html

``_build/html`` is served by a local ``http.server`` on a free loopback port (``file://`` breaks
some of the theme's scripts) and each page is loaded by Debian's ``chromium`` through Debian's
``chromedriver`` and Selenium; nothing is downloaded (the driver path is given, so Selenium
Manager never runs, and ``SE_OFFLINE`` is set). For each page:

* **console**: no ``SEVERE`` entry in the browser log: uncaught exceptions, ``console.error``,
  resources that failed to load (404s, or a CDN that cannot be reached offline);
* **math**: MathJax 3 has finished (``MathJax.startup.promise``) and every ``.math`` element holds
  an ``mjx-container``, no ``mjx-merror`` (a TeX error) is left, and no text outside code blocks
  still contains raw ``$$`` or ``\\begin{``;
* **images**: every ``<img>`` (made eager first, so lazy ones load) is complete with
  ``naturalWidth > 0``;
* **links**: every same-origin ``<a href>`` names an existing file and, for ``#fragment``, an
  element with that id (or an anchor with that name) in the target page;
* **Colab**: a page built from a notebook (``X.html`` next to a source ``X.ipynb``) links to
  ``<colab_url>/github/<owner>/<repo>/blob/<branch>/<path_to_book>/X.ipynb``, from ``_config.yml``.

A page whose only content is a ``<meta http-equiv="refresh">`` redirect (the root ``index.html``)
is followed to its target and checked for console errors; the target is checked on its own.

Screenshots of a few pages (``--screenshot``; by default the landing page and the adversarial
examples chapter) are saved as PNG to ``--screenshot-dir`` (default ``_build/browser``) for CI.

Prints one line per page and the totals; exits 1 listing every failure page by page, 2 when the
browser or the site cannot be used at all.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from html.parser import HTMLParser
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urljoin, urlsplit

import yaml

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

DEFAULT_CHROMIUM = "/usr/bin/chromium"
DEFAULT_CHROMEDRIVER = "/usr/bin/chromedriver"
DEFAULT_COLAB_URL = "https://colab.research.google.com"
DEFAULT_SCREENSHOTS = ("book/index.html", "book/adversarial_examples.html")
#: Chromium flags for a sandboxed CI machine: no GPU, no sandbox (root), and no background
#: traffic (updates, sync, QUIC probes) that would only log refused connections offline.
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
)
WINDOW_SIZE = (1280, 1600)
PAGE_TIMEOUT_S = 60.0
IMAGE_TIMEOUT_S = 30.0
#: Raw TeX that must not survive in a page's text once MathJax has run.
RAW_TEX = ("$$", "\\begin{")
#: Elements whose text is code, not prose: raw TeX there is intended.
CODE_SELECTOR = "pre, code, kbd, samp, script, style, textarea, .highlight, mjx-container"
#: Top-level folders of the Sphinx output that hold assets, not pages.
ASSET_DIRS = frozenset({"_static", "_sources", "_images", "_downloads", "_sphinx_design_static"})


class CheckError(RuntimeError):
    """The check could not run at all (no browser, no site, bad configuration)."""


# --------------------------------------------------------------------------------------------
# Configuration and pages


@dataclass(frozen=True)
class Repository:
    """Where the book's sources live, as configured under ``repository:`` in ``_config.yml``."""

    owner: str
    name: str
    branch: str
    path_to_book: str
    colab_url: str = DEFAULT_COLAB_URL

    def colab_link(self, notebook: str) -> str:
        """The Colab URL that opens ``notebook`` (a path relative to the book's root)."""
        parts = [p for p in (self.path_to_book.strip("/"), notebook.strip("/")) if p]
        return (
            f"{self.colab_url.rstrip('/')}/github/{self.owner}/{self.name}/blob/"
            f"{self.branch}/{'/'.join(parts)}"
        )


def read_repository(config_path: Path) -> Repository:
    """Read ``repository`` (url, branch, path_to_book) and ``launch_buttons.colab_url``."""
    try:
        config = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    except OSError as err:
        raise CheckError(f"cannot read the book configuration {config_path}: {err}") from err
    repo = config.get("repository") or {}
    url = str(repo.get("url") or "")
    parts = [p for p in urlsplit(url).path.split("/") if p]
    if len(parts) < 2:
        raise CheckError(
            f"{config_path}: repository.url must look like https://github.com/OWNER/REPO, "
            f"got {url!r}"
        )
    owner, name = parts[0], parts[1].removesuffix(".git")
    launch = config.get("launch_buttons") or {}
    return Repository(
        owner=owner,
        name=name,
        branch=str(repo.get("branch") or "main"),
        path_to_book=str(repo.get("path_to_book") or ""),
        colab_url=str(launch.get("colab_url") or DEFAULT_COLAB_URL),
    )


def find_pages(html_dir: Path) -> list[str]:
    """Every ``.html`` page of the site (posix paths relative to ``html_dir``), sorted."""
    pages = []
    for path in html_dir.rglob("*.html"):
        rel = path.relative_to(html_dir)
        if rel.parts[0] in ASSET_DIRS or rel.parts[0].startswith("."):
            continue
        pages.append(rel.as_posix())
    return sorted(pages)


def notebook_for(page: str, source_dir: Path) -> str | None:
    """The notebook ``page`` was built from (relative to ``source_dir``), if there is one."""
    notebook = PurePosixPath(page).with_suffix(".ipynb").as_posix()
    return notebook if (source_dir / notebook).is_file() else None


class _StaticPage(HTMLParser):
    """Ids, anchor names and a meta-refresh target, read from a page's HTML without a browser."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.refresh: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k.lower(): v or "" for k, v in attrs}
        if "id" in values:
            self.ids.add(values["id"])
        if tag == "a" and "name" in values:
            self.ids.add(values["name"])
        if tag == "meta" and values.get("http-equiv", "").lower() == "refresh":
            content = values.get("content", "")
            _, _, target = content.partition(";")
            target = target.strip()
            if target.lower().startswith("url="):
                self.refresh = target[4:].strip().strip("'\"")


def read_static(path: Path) -> _StaticPage:
    parser = _StaticPage()
    parser.feed(path.read_text(encoding="utf-8", errors="replace"))
    parser.close()
    return parser


# --------------------------------------------------------------------------------------------
# Server and browser


class _QuietHandler(SimpleHTTPRequestHandler):
    def do_GET(self) -> None:
        # The one request no page makes: a browser asks every site root for /favicon.ico on
        # its own. The book declares no favicon, so answer "no content" rather than 404 (a
        # published book sits below some other site's root anyway). Everything else is served.
        if self.path == "/favicon.ico" and not (Path(self.directory) / "favicon.ico").exists():
            self.send_response(204)
            self.end_headers()
            return
        super().do_GET()

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output to the report (failed requests show up as console errors)."""


@contextmanager
def serve(root: Path) -> Iterator[str]:
    """Serve ``root`` over HTTP on a free loopback port in a thread; yield the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="check-html-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def find_browser(chromium: str | None = None, chromedriver: str | None = None) -> tuple[Path, Path]:
    """Paths of Chromium and its driver (arguments, then $ADVBOOK_CHROMIUM/..., then Debian's)."""
    browser = Path(chromium or os.environ.get("ADVBOOK_CHROMIUM") or DEFAULT_CHROMIUM)
    driver = Path(chromedriver or os.environ.get("ADVBOOK_CHROMEDRIVER") or DEFAULT_CHROMEDRIVER)
    missing = [str(p) for p in (browser, driver) if not (p.is_file() and os.access(p, os.X_OK))]
    if missing:
        raise CheckError(
            f"not found or not executable: {', '.join(missing)}. Install Debian's browser and "
            "driver with `apt-get install -y chromium chromium-driver` (make test-html does this)"
        )
    return browser, driver


@contextmanager
def browser_session(chromium: Path, chromedriver: Path) -> Iterator[WebDriver]:
    """A headless Chromium with a fresh profile that records the console at every level."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as err:
        raise CheckError("selenium is not installed: pip install -r requirements.txt") from err
    # The driver path is given, so Selenium Manager is skipped; make sure it could not download.
    os.environ["SE_OFFLINE"] = "true"
    profile = Path(tempfile.mkdtemp(prefix="advbook-chromium-"))
    options = webdriver.ChromeOptions()
    options.binary_location = str(chromium)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={WINDOW_SIZE[0]},{WINDOW_SIZE[1]}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = None
    try:
        try:
            driver = webdriver.Chrome(service=Service(str(chromedriver)), options=options)
        except Exception as err:  # selenium raises several unrelated types here
            raise CheckError(f"could not start {chromium} via {chromedriver}: {err}") from err
        driver.set_page_load_timeout(PAGE_TIMEOUT_S)
        driver.set_script_timeout(PAGE_TIMEOUT_S)
        yield driver
    finally:
        if driver is not None:
            driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# In-page checks (JavaScript run by the browser)

# Resolves once MathJax 3 has typeset the page and the web fonts have loaded (or failed).
_WAIT_FOR_RENDERING = """
const done = arguments[arguments.length - 1];
const fonts = () => (document.fonts ? document.fonts.ready : Promise.resolve());
const mj = window.MathJax;
if (!mj || !mj.startup || !mj.startup.promise) {
  fonts().then(() => done({mathjax: mj ? 'configured, not loaded' : 'absent'}));
} else {
  mj.startup.promise
    .then(() => fonts())
    .then(() => done({mathjax: 'ready'}), (e) => done({mathjax: 'error: ' + e}));
}
"""

# Makes every image eager and resolves once all of them are complete (or after the timeout).
_WAIT_FOR_IMAGES = """
const timeoutMs = arguments[0];
const done = arguments[arguments.length - 1];
const images = Array.from(document.images);
for (const img of images) { if (img.loading === 'lazy') img.loading = 'eager'; }
const start = Date.now();
(function poll() {
  if (images.every((img) => img.complete) || Date.now() - start > timeoutMs) {
    done(images.filter((img) => !img.complete).length);
  } else {
    setTimeout(poll, 50);
  }
})();
"""

_INSPECT = """
const codeSelector = arguments[0];
const rawTex = arguments[1];
const colabPrefix = arguments[2];
const short = (s) => (s.length > 120 ? s.slice(0, 117) + '...' : s);
const math = Array.from(document.querySelectorAll('.math'));
const unrendered = math.filter((el) => !el.querySelector('mjx-container'))
  .map((el) => short(el.textContent.trim()));
const errors = Array.from(document.querySelectorAll('mjx-merror'))
  .map((el) => short(el.getAttribute('data-mjx-error') || el.textContent));
const raw = [];
const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
while (walker.nextNode()) {
  const node = walker.currentNode;
  const parent = node.parentElement;
  if (!parent || parent.closest(codeSelector)) continue;
  for (const pattern of rawTex) {
    const i = node.nodeValue.indexOf(pattern);
    if (i >= 0) {
      raw.push(short(node.nodeValue.slice(Math.max(0, i - 40), i + 60).replace(/\\s+/g, ' ')));
    }
  }
}
const images = Array.from(document.images);
const brokenImages = images.filter((img) => !img.complete || img.naturalWidth === 0)
  .map((img) => img.getAttribute('src') || '(no src)');
const anchors = Array.from(document.querySelectorAll('a[href]'));
const links = anchors.map((a) => [a.getAttribute('href'), a.href]);
const colab = anchors.map((a) => a.href).filter((h) => h.startsWith(colabPrefix));
const ids = Array.from(document.querySelectorAll('[id]')).map((el) => el.id)
  .concat(Array.from(document.querySelectorAll('a[name]')).map((a) => a.name));
return {
  mathCount: math.length,
  containers: document.querySelectorAll('mjx-container').length,
  unrendered: unrendered,
  errors: errors,
  raw: raw,
  imageCount: images.length,
  brokenImages: brokenImages,
  links: links,
  colab: colab,
  ids: ids,
};
"""

# Scrolls to the first figure drawn by the page (else its first displayed equation), so that a
# screenshot shows rendered content rather than the page header.
_SCROLL_TO_CONTENT = """
const img = document.querySelector('figure img, .cell_output img');
const el = img ? img.closest('figure') || img : document.querySelector('div.math');
if (el) { window.scrollTo(0, Math.max(0, el.getBoundingClientRect().top + window.scrollY - 400)); }
"""


@dataclass
class PageResult:
    """What one page showed, and everything wrong with it."""

    page: str
    failures: list[str] = field(default_factory=list)
    links: list[tuple[str, str]] = field(default_factory=list)
    ids: set[str] = field(default_factory=set)
    math: int = 0
    images: int = 0
    colab: str = "-"
    redirect: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        status = "PASS" if self.ok else "FAIL"
        if self.redirect is not None:
            detail = f"redirect -> {self.redirect}"
        else:
            detail = (
                f"math {self.math}, images {self.images}, links {len(self.links)}, "
                f"colab {self.colab}"
            )
        return f"{status} {self.page:<40} {detail}  {self.seconds:.1f} s"


def console_errors(driver: WebDriver) -> list[str]:
    """SEVERE entries of the browser log since it was last read."""
    return [
        f"console: {entry.get('message', '')}"
        for entry in driver.get_log("browser")
        if entry.get("level") == "SEVERE"
    ]


def check_page(
    driver: WebDriver,
    base_url: str,
    html_dir: Path,
    page: str,
    colab_expected: str | None,
    colab_prefix: str,
    screenshot: Path | None = None,
) -> PageResult:
    """Load ``page`` and run every in-page check (its links are resolved by ``check_links``)."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    result = PageResult(page)
    start = time.monotonic()
    url = urljoin(base_url, page)
    driver.get_log("browser")  # drop anything left over from before this page
    refresh = read_static(html_dir / page).refresh
    try:
        driver.get(url)
        if refresh is not None:
            result.redirect = refresh
            target = urljoin(url, refresh)
            result.links.append((refresh, target))
            WebDriverWait(driver, PAGE_TIMEOUT_S).until(
                lambda d: (
                    d.current_url.split("#")[0] == target.split("#")[0]
                    and d.execute_script("return document.readyState") == "complete"
                )
            )
        else:
            _inspect(driver, result, colab_expected, colab_prefix)
            if screenshot is not None:
                driver.execute_script(_SCROLL_TO_CONTENT)
                time.sleep(0.2)  # let the scroll settle before the capture
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                if not driver.save_screenshot(str(screenshot)):
                    result.failures.append(f"screenshot: could not write {screenshot}")
        driver.get("about:blank")  # errors that arrive late still belong to this page
    except WebDriverException as err:
        message = (err.msg or type(err).__name__).splitlines()[0]
        result.failures.append(f"browser: {message}")
    result.failures[:0] = console_errors(driver)
    result.seconds = time.monotonic() - start
    return result


def _inspect(
    driver: WebDriver, result: PageResult, colab_expected: str | None, colab_prefix: str
) -> None:
    rendering = driver.execute_async_script(_WAIT_FOR_RENDERING)
    pending = driver.execute_async_script(_WAIT_FOR_IMAGES, int(IMAGE_TIMEOUT_S * 1000))
    if pending:
        result.failures.append(f"images: {pending} still loading after {IMAGE_TIMEOUT_S:.0f} s")
    found: dict[str, Any] = driver.execute_script(
        _INSPECT, CODE_SELECTOR, list(RAW_TEX), colab_prefix.rstrip("/") + "/"
    )
    result.math = int(found["mathCount"])
    result.images = int(found["imageCount"])
    result.links = [(raw, absolute) for raw, absolute in found["links"]]
    result.ids = set(found["ids"])

    mathjax = rendering["mathjax"]
    if result.math:
        if mathjax != "ready":
            # one failure for the page, not one per element: none of them can be rendered
            first = found["unrendered"][0] if found["unrendered"] else ""
            result.failures.append(
                f"math: the page has {result.math} math elements but MathJax is {mathjax} "
                f"(first: {first})"
            )
        else:
            if not found["containers"]:
                result.failures.append("math: MathJax ran but rendered no mjx-container")
            for tex in found["unrendered"]:
                result.failures.append(f"math: not rendered: {tex}")
    elif mathjax.startswith("error"):
        result.failures.append(f"math: MathJax {mathjax}")
    for message in found["errors"]:
        result.failures.append(f"math: MathJax error: {message}")
    for text in found["raw"]:
        result.failures.append(f'math: raw TeX in the text: "{text}"')
    for src in found["brokenImages"]:
        result.failures.append(f"image: not loaded (naturalWidth 0): {src}")

    if colab_expected is not None:
        if colab_expected in found["colab"]:
            result.colab = "ok"
        else:
            result.colab = "MISSING"
            others = ", ".join(found["colab"]) or "none"
            result.failures.append(
                f"colab: no link to {colab_expected} (Colab links on the page: {others})"
            )


def check_links(
    result: PageResult, html_dir: Path, base_url: str, static_ids: dict[str, set[str]]
) -> None:
    """Add a failure for every same-origin link of a page to a missing file or fragment.

    Fragments in the page itself are looked up among the ids of its live DOM; in other pages
    among the ids of their HTML source (``static_ids`` caches those).
    """
    base = urlsplit(base_url)
    seen: set[str] = set()
    for raw, absolute in result.links:
        parts = urlsplit(absolute)
        if parts.scheme not in ("http", "https") or parts.netloc != base.netloc:
            continue  # mailto:, javascript:, or another site
        if raw in seen:
            continue
        seen.add(raw)
        rel = unquote(parts.path).lstrip("/")
        if rel == "" or rel.endswith("/"):
            rel += "index.html"
        target = html_dir / rel
        if not target.is_file():
            result.failures.append(f"link: {raw} -> /{rel}: no such file")
            continue
        fragment = unquote(parts.fragment)
        if not fragment or target.suffix != ".html":
            continue
        if rel == result.page and result.redirect is None:
            ids = result.ids
        else:
            if rel not in static_ids:
                static_ids[rel] = read_static(target).ids
            ids = static_ids[rel]
        if fragment not in ids:
            result.failures.append(f"link: {raw} -> /{rel}: no element with id {fragment!r}")


@dataclass
class SiteReport:
    results: list[PageResult]
    screenshots: list[Path]
    seconds: float

    @property
    def failures(self) -> int:
        return sum(len(r.failures) for r in self.results)

    @property
    def failed_pages(self) -> list[PageResult]:
        return [r for r in self.results if not r.ok]


def check_site(
    driver: WebDriver,
    html_dir: Path,
    source_dir: Path,
    repository: Repository,
    *,
    pages: Sequence[str] | None = None,
    screenshots: Sequence[str] = (),
    screenshot_dir: Path | None = None,
    echo: bool = False,
) -> SiteReport:
    """Serve ``html_dir``, check ``pages`` (default: every page) and resolve their links."""
    start = time.monotonic()
    pages = list(pages) if pages is not None else find_pages(html_dir)
    if not pages:
        raise CheckError(f"no HTML pages under {html_dir}: build the book first")
    unknown = sorted(set(screenshots) - set(pages))
    if unknown:
        raise CheckError(f"screenshot pages not in the site: {', '.join(unknown)}")
    shot_dir = screenshot_dir or html_dir.parent / "browser"
    shots: dict[str, Path] = {
        page: shot_dir / (PurePosixPath(page).stem + ".png") for page in screenshots
    }
    results = []
    static_ids: dict[str, set[str]] = {}
    with serve(html_dir) as base_url:
        for page in pages:
            notebook = notebook_for(page, source_dir)
            expected = repository.colab_link(notebook) if notebook else None
            result = check_page(
                driver,
                base_url,
                html_dir,
                page,
                expected,
                repository.colab_url,
                screenshot=shots.get(page),
            )
            check_links(result, html_dir, base_url, static_ids)
            results.append(result)
            if echo:
                print(result.summary(), flush=True)
    saved = [path for path in shots.values() if path.is_file()]
    return SiteReport(results, saved, time.monotonic() - start)


# --------------------------------------------------------------------------------------------
# Command line


def report(site: SiteReport) -> str:
    """The failures page by page (empty when every page passed) and the totals."""
    lines = []
    if site.failed_pages:
        lines.append("")
        lines.append("Failures, page by page:")
        for result in site.failed_pages:
            lines.append(f"  {result.page}  ({len(result.failures)})")
            lines.extend(f"    - {failure}" for failure in result.failures)
    passed = len(site.results) - len(site.failed_pages)
    lines.append("")
    lines.append(
        f"browser check: {len(site.results)} pages, {passed} passed, "
        f"{len(site.failed_pages)} failed ({site.failures} failures) in {site.seconds:.1f} s"
    )
    for path in site.screenshots:
        lines.append(f"screenshot (CI artifact): {path}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.check_html",
        description="Open every page of the built book in headless Chromium and check it.",
    )
    parser.add_argument("html_dir", type=Path, help="the built site, e.g. _build/html")
    parser.add_argument(
        "--source-dir",
        type=Path,
        default=Path("."),
        help="the book's source root, where _config.yml and the notebooks are (default: .)",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="the Jupyter Book configuration (default: SOURCE_DIR/_config.yml)",
    )
    parser.add_argument("--chromium", default=None, help=f"default: {DEFAULT_CHROMIUM}")
    parser.add_argument("--chromedriver", default=None, help=f"default: {DEFAULT_CHROMEDRIVER}")
    parser.add_argument(
        "--screenshot",
        action="append",
        default=None,
        metavar="PAGE",
        help="save a PNG of this page (repeatable; default: "
        + " and ".join(DEFAULT_SCREENSHOTS)
        + ")",
    )
    parser.add_argument(
        "--screenshot-dir",
        type=Path,
        default=None,
        help="where the PNGs go (default: HTML_DIR/../browser, i.e. _build/browser)",
    )
    args = parser.parse_args(argv)

    html_dir: Path = args.html_dir
    source_dir: Path = args.source_dir
    screenshots = DEFAULT_SCREENSHOTS if args.screenshot is None else tuple(args.screenshot)
    try:
        if not (html_dir / "index.html").is_file():
            raise CheckError(f"{html_dir}/index.html does not exist: build the book first")
        repository = read_repository(args.config or source_dir / "_config.yml")
        chromium, chromedriver = find_browser(args.chromium, args.chromedriver)
        with browser_session(chromium, chromedriver) as driver:
            site = check_site(
                driver,
                html_dir.resolve(),
                source_dir.resolve(),
                repository,
                screenshots=screenshots,
                screenshot_dir=args.screenshot_dir,
                echo=True,
            )
    except CheckError as err:
        print(f"check_html: error: {err}", file=sys.stderr)
        return 2
    print(report(site))
    return 1 if site.failed_pages else 0


if __name__ == "__main__":
    sys.exit(main())
