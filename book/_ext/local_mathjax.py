"""Sphinx extension: serve MathJax 3 from the book's own ``_static`` folder instead of a CDN.

Sphinx loads MathJax from a CDN by default, so a book read offline (or tested in a sandbox
without network) shows raw TeX. This extension copies one combined MathJax 3 component and
the web fonts it needs out of the ``django-static-mathjax`` wheel (a pip-installable copy of
the official MathJax 3.2.2 distribution; it has no dependencies) into ``_static/mathjax/``.

Configure it in ``_config.yml`` (``sphinx: config:``) by naming the component relative to
``_static``, e.g. ``mathjax_path: mathjax/tex-chtml-full.js``. The "full" TeX component holds
every TeX extension, so MathJax never fetches an extension at run time; the CommonHTML output
reads its fonts from ``output/chtml/fonts/woff-v2`` next to the component, which is copied too
(about 1.7 MB in all). A ``mathjax_path`` that is a URL is left alone (nothing is copied).
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path, PurePosixPath

from sphinx.application import Sphinx
from sphinx.config import Config
from sphinx.errors import ConfigError, ExtensionError
from sphinx.util import logging

logger = logging.getLogger(__name__)

#: Folder under the HTML output's ``_static`` that receives the MathJax files.
STATIC_SUBDIR = "mathjax"
#: Fonts of the CommonHTML output, relative to the component (MathJax's default ``fontURL``).
FONT_SUBDIR = "output/chtml/fonts/woff-v2"
#: The PyPI package that ships the MathJax files.
PACKAGE = "django-static-mathjax"


def mathjax_es5_dir() -> Path:
    """The ``es5`` folder (combined components and fonts) of the installed MathJax copy."""
    spec = importlib.util.find_spec("mathjax")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        es5 = Path(location) / "static" / "mathjax" / "es5"
        if (es5 / "startup.js").is_file():
            return es5
    raise ExtensionError(
        f"local_mathjax: the MathJax files were not found. Install the {PACKAGE} package "
        "(pinned in requirements.txt: `pip install -r requirements.txt`), or set mathjax_path "
        "to a URL in _config.yml to load MathJax from a CDN instead."
    )


def local_component(config: Config) -> str | None:
    """The component file named by ``mathjax_path`` (e.g. ``tex-chtml-full.js``), or None."""
    path = str(config.mathjax_path or "")
    if "://" in path or path.startswith("//"):
        return None
    parts = PurePosixPath(path).parts
    if len(parts) != 2 or parts[0] != STATIC_SUBDIR or not parts[1].endswith(".js"):
        raise ConfigError(
            f"local_mathjax: mathjax_path must be a URL or '{STATIC_SUBDIR}/<component>.js' "
            f"(a combined MathJax 3 component such as tex-chtml-full.js), got {path!r}"
        )
    return parts[1]


def check_config(app: Sphinx, config: Config) -> None:
    """Fail early, before reading any page, when the configured component does not exist."""
    component = local_component(config)
    if component is None:
        return
    es5 = mathjax_es5_dir()
    if not (es5 / component).is_file():
        available = sorted(p.name for p in es5.glob("*.js"))
        raise ConfigError(
            f"local_mathjax: {PACKAGE} has no component {component!r}; "
            f"choose one of {', '.join(available)}"
        )


def copy_mathjax(app: Sphinx, exception: Exception | None) -> None:
    """Copy the component and its fonts into ``<outdir>/_static/mathjax`` after an HTML build."""
    if exception is not None or app.builder.format != "html":
        return
    component = local_component(app.config)
    if component is None:
        return
    es5 = mathjax_es5_dir()
    target = Path(app.outdir) / "_static" / STATIC_SUBDIR
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy2(es5 / component, target / component)
    fonts = target / FONT_SUBDIR
    if fonts.exists():
        shutil.rmtree(fonts)
    shutil.copytree(es5 / FONT_SUBDIR, fonts)
    logger.info("local_mathjax: copied %s and its fonts to %s", component, target)


def setup(app: Sphinx) -> dict[str, bool | str]:
    app.setup_extension("sphinx.ext.mathjax")
    app.connect("config-inited", check_config)
    app.connect("build-finished", copy_mathjax)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
