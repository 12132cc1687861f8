"""Sphinx extension: emit each inline ``<script>`` of a page once.

Sphinx 7.4 writes an inline script twice when an extension registers it with
``app.add_js_file(None, body=...)`` after the builder is initialised: the builder keeps it with
filename ``None`` and ``prepare_writing`` adds the registry's copy again with filename ``''``,
and the two do not compare equal. sphinx-thebe registers ``const THEBE_JS_URL = ...`` this way
(at ``env-before-read-docs``), so every page declared that constant twice and the browser logged
``SyntaxError: Identifier 'THEBE_JS_URL' has already been declared`` (found by
``tools/check_html.py``). This hook drops the second copy from each page's ``script_files``.
"""

from __future__ import annotations

from typing import Any

from sphinx.application import Sphinx


def _key(script: Any) -> tuple[str, tuple[tuple[str, str], ...], int]:
    """Identity of a script entry with ``None`` and ``''`` (no file, inline body) made equal."""
    filename = str(script) if isinstance(script, str) else (script.filename or "")
    attributes = getattr(script, "attributes", {}) or {}
    priority = int(getattr(script, "priority", 500))
    return filename, tuple(sorted((k, str(v)) for k, v in attributes.items())), priority


def dedupe_scripts(
    app: Sphinx, pagename: str, templatename: str, context: dict[str, Any], doctree: Any
) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen: set[tuple[str, tuple[tuple[str, str], ...], int]] = set()
    unique = []
    for script in scripts:
        key = _key(script)
        if key not in seen:
            seen.add(key)
            unique.append(script)
    if len(unique) != len(scripts):
        # a new list: the builder restores its own list after each page
        context["script_files"] = unique


def setup(app: Sphinx) -> dict[str, bool | str]:
    # Late priority: after sphinx.ext.mathjax and myst-nb add their per-page scripts.
    app.connect("html-page-context", dedupe_scripts, priority=900)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
