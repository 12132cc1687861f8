"""The browser check of the built book (tools/check_html.py) must be able to fail.

A small fake site is written to a temporary folder: one good page, one good notebook page, and
pages that each break one rule (a missing image, dead links and fragments, raw TeX, a TeX error,
math without MathJax, console errors, wrong and missing Colab links, a redirect to nowhere).
One headless Chromium session checks them all; each breakage must be reported on its page and
the good pages must pass. Skipped, with the reason, where Debian's chromium/chromedriver are not
installed (``make test-html`` installs them).
"""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from tools.check_html import (
    CheckError,
    PageResult,
    Repository,
    browser_session,
    check_site,
    find_browser,
    find_pages,
    main,
    notebook_for,
    read_repository,
)

ROOT = Path(__file__).resolve().parents[1]

CONFIG = """\
repository:
  url: https://github.com/octo/demo
  branch: dev
  path_to_book: docs
launch_buttons:
  colab_url: https://colab.research.google.com
"""
COLAB = "https://colab.research.google.com/github/octo/demo/blob/dev/docs"

# The book's MathJax set-up in miniature: local MathJax 3, only elements of class "math" typeset.
MATHJAX_HEAD = """
<script>window.MathJax = {options: {processHtmlClass: "math", ignoreHtmlClass: "ignore"}};</script>
<script defer src="{root}_static/mathjax/tex-chtml-full.js"></script>
"""


def page(body: str, *, mathjax: bool = False, root: str = "") -> str:
    head = MATHJAX_HEAD.replace("{root}", root) if mathjax else ""
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>t</title>{head}'
        f'</head><body class="ignore">{body}</body></html>\n'
    )


PAGES = {
    "good.html": page(
        '<h1 id="top">Good</h1>'
        '<p>Inline <span class="math">\\(x^2 + \\epsilon\\)</span> and display:</p>'
        '<div class="math">\\[\\sum_i w_i \\delta_i \\le \\epsilon \\|w\\|_1\\]</div>'
        "<pre>code may say $$x$$ and \\begin{equation}</pre>"
        '<img src="_static/pixel.png" alt="pixel" loading="lazy">'
        '<a href="other.html#target">other</a> <a href="#top">top</a> <a href="./">home</a>'
        '<a href="https://example.org/x">external</a> <a href="mailto:a@b.c">mail</a>',
        mathjax=True,
    ),
    "other.html": page('<h2 id="target">Target</h2><a href="good.html">back</a>'),
    "index.html": '<meta http-equiv="Refresh" content="0; url=good.html" />\n',
    "redirect_gone.html": '<meta http-equiv="Refresh" content="0; url=gone.html" />\n',
    "broken_image.html": page('<img src="_static/missing.png" alt="missing">'),
    "broken_links.html": page(
        '<a href="nothere.html">a</a> <a href="other.html#nope">b</a> <a href="#nowhere">c</a>'
        '<a href="sub/">d</a>'
    ),
    "raw_tex.html": page("<p>Unrendered: $$x^2$$</p><p>and \\begin{align} a \\end{align}</p>"),
    "tex_error.html": page('<p><span class="math">\\(\\frac{1}\\)</span></p>', mathjax=True),
    "no_mathjax.html": page('<p><span class="math">\\(y\\)</span></p>'),
    "console_error.html": page(
        '<script>console.error("boom-console");</script>'
        '<script>throw new Error("boom-throw");</script>'
    ),
    "book/nb_good.html": page(
        f'<a href="{COLAB}/book/nb_good.ipynb">Colab</a><a href="../good.html">up</a>'
    ),
    "book/nb_wrong.html": page(f'<a href="{COLAB}/book/nb_good.ipynb">Colab</a>'),
    "book/nb_missing.html": page("<p>No launch button.</p>"),
}
NOTEBOOKS = ("book/nb_good.ipynb", "book/nb_wrong.ipynb", "book/nb_missing.ipynb")


def _copy_mathjax(static: Path) -> None:
    """The same files the book's Sphinx hook serves (book/_ext/local_mathjax.py)."""
    spec = importlib.util.spec_from_file_location(
        "local_mathjax", ROOT / "book" / "_ext" / "local_mathjax.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    es5: Path = module.mathjax_es5_dir()
    target = static / "mathjax"
    target.mkdir(parents=True)
    shutil.copy2(es5 / "tex-chtml-full.js", target / "tex-chtml-full.js")
    shutil.copytree(es5 / module.FONT_SUBDIR, target / module.FONT_SUBDIR)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(html_dir, source_dir) of the fake book."""
    base = tmp_path_factory.mktemp("fake_book")
    html, source = base / "html", base / "source"
    for name, text in PAGES.items():
        (html / name).parent.mkdir(parents=True, exist_ok=True)
        (html / name).write_text(text, encoding="utf-8")
    static = html / "_static"
    static.mkdir()
    Image.new("RGB", (3, 2), (200, 30, 30)).save(static / "pixel.png")
    (static / "asset.html").write_text("<p>not a page</p>", encoding="utf-8")
    _copy_mathjax(static)
    (source / "book").mkdir(parents=True)
    (source / "_config.yml").write_text(CONFIG, encoding="utf-8")
    for notebook in NOTEBOOKS:
        (source / notebook).write_text("{}", encoding="utf-8")
    return html, source


@pytest.fixture(scope="module")
def results(site: tuple[Path, Path]) -> Iterator[dict[str, PageResult]]:
    """Every page of the fake site checked in one browser session."""
    pytest.importorskip("selenium", reason="selenium is not installed (requirements.txt)")
    try:
        chromium, chromedriver = find_browser()
    except CheckError as err:
        pytest.skip(f"no headless browser: {err}")
    html, source = site
    with browser_session(chromium, chromedriver) as driver:
        report = check_site(
            driver,
            html,
            source,
            read_repository(source / "_config.yml"),
            screenshots=("good.html",),
            screenshot_dir=html.parent / "shots",
        )
    assert report.screenshots == [html.parent / "shots" / "good.png"]
    yield {r.page: r for r in report.results}


def failures(results: dict[str, PageResult], page: str) -> str:
    return "\n".join(results[page].failures)


# ---------------------------------------------------------------- without a browser


def test_repository_and_colab_link(site: tuple[Path, Path]) -> None:
    repo = read_repository(site[1] / "_config.yml")
    assert repo == Repository("octo", "demo", "dev", "docs")
    assert repo.colab_link("book/x.ipynb") == f"{COLAB}/book/x.ipynb"
    flat = Repository("octo", "demo", "main", "")
    assert flat.colab_link("book/x.ipynb").endswith("/github/octo/demo/blob/main/book/x.ipynb")


def test_the_book_config_gives_the_expected_colab_link() -> None:
    repo = read_repository(ROOT / "_config.yml")
    link = repo.colab_link("book/setup.ipynb")
    assert link.startswith("https://colab.research.google.com/github/")
    assert link.endswith("/book/setup.ipynb")


def test_bad_repository_url_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "_config.yml").write_text("repository:\n  url: nowhere\n", encoding="utf-8")
    with pytest.raises(CheckError, match="OWNER/REPO"):
        read_repository(tmp_path / "_config.yml")


def test_pages_and_notebooks(site: tuple[Path, Path]) -> None:
    html, source = site
    pages = find_pages(html)
    assert set(pages) == set(PAGES)  # _static/asset.html is an asset, not a page
    assert notebook_for("book/nb_good.html", source) == "book/nb_good.ipynb"
    assert notebook_for("good.html", source) is None


def test_missing_browser_exits_2(site: tuple[Path, Path], capsys: pytest.CaptureFixture) -> None:
    html, source = site
    code = main([str(html), "--source-dir", str(source), "--chromium", "/nonexistent/chromium"])
    assert code == 2
    assert "chromium chromium-driver" in capsys.readouterr().err


# ---------------------------------------------------------------- in the browser


def test_good_pages_pass(results: dict[str, PageResult]) -> None:
    good = results["good.html"]
    assert good.failures == []
    assert good.math == 2 and good.images == 1
    assert results["other.html"].failures == []
    assert results["book/nb_good.html"].failures == []
    assert results["book/nb_good.html"].colab == "ok"
    assert results["index.html"].failures == [] and results["index.html"].redirect == "good.html"


def test_broken_image(results: dict[str, PageResult]) -> None:
    text = failures(results, "broken_image.html")
    assert "image: not loaded (naturalWidth 0): _static/missing.png" in text
    assert "404" in text  # the failed request is a console error too


def test_broken_links_and_fragments(results: dict[str, PageResult]) -> None:
    text = failures(results, "broken_links.html")
    assert "link: nothere.html -> /nothere.html: no such file" in text
    assert "link: other.html#nope -> /other.html: no element with id 'nope'" in text
    assert "link: #nowhere -> /broken_links.html: no element with id 'nowhere'" in text
    assert "link: sub/ -> /sub/index.html: no such file" in text


def test_redirect_to_a_missing_page(results: dict[str, PageResult]) -> None:
    text = failures(results, "redirect_gone.html")
    assert "link: gone.html -> /gone.html: no such file" in text


def test_raw_tex(results: dict[str, PageResult]) -> None:
    result = results["raw_tex.html"]
    text = failures(results, "raw_tex.html")
    assert "raw TeX in the text" in text and "$$x^2$$" in text and "\\begin{align}" in text
    assert len(result.failures) == 2
    # the same strings inside <pre> on the good page were not reported
    assert results["good.html"].failures == []


def test_tex_error(results: dict[str, PageResult]) -> None:
    assert "math: MathJax error:" in failures(results, "tex_error.html")


def test_math_without_mathjax(results: dict[str, PageResult]) -> None:
    text = failures(results, "no_mathjax.html")
    assert "1 math elements but MathJax is absent (first: \\(y\\))" in text


def test_console_errors(results: dict[str, PageResult]) -> None:
    text = failures(results, "console_error.html")
    assert "console:" in text and "boom-console" in text and "boom-throw" in text


def test_colab_links(results: dict[str, PageResult]) -> None:
    wrong = failures(results, "book/nb_wrong.html")
    assert f"colab: no link to {COLAB}/book/nb_wrong.ipynb" in wrong
    assert f"{COLAB}/book/nb_good.ipynb" in wrong  # the link it has instead is shown
    missing = failures(results, "book/nb_missing.html")
    assert f"colab: no link to {COLAB}/book/nb_missing.ipynb (Colab links on the page: none)" in (
        missing
    )
    assert results["book/nb_missing.html"].colab == "MISSING"


def test_screenshot_is_a_png(site: tuple[Path, Path], results: dict[str, PageResult]) -> None:
    shot = site[0].parent / "shots" / "good.png"
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
