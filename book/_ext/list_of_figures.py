"""Sphinx extension: a generated "List of figures" for the book.

Put ``{list-of-figures}`` (a MyST directive) on a page; at build time it becomes a table of every
numbered figure in the book: number, caption, chapter, label, and the notebook cell that draws it
(read from the notebook's ``mystnb.figure.name`` cell metadata). Labels are the figure names
chosen by the authors, so they are stable across rebuilds and can be cited.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective


class list_of_figures(nodes.General, nodes.Element):
    """Placeholder replaced by the table once all figure numbers are known."""


class ListOfFiguresDirective(SphinxDirective):
    def run(self) -> list[nodes.Node]:
        return [list_of_figures("")]


def _figure_cells(srcdir: Path, docname: str) -> dict[str, int]:
    """Map figure label -> index of the code cell (0-based, over all cells) in the notebook."""
    path = srcdir / f"{docname}.ipynb"
    if not path.exists():
        return {}
    nb = json.loads(path.read_text(encoding="utf-8"))
    found = {}
    for i, cell in enumerate(nb.get("cells", [])):
        name = cell.get("metadata", {}).get("mystnb", {}).get("figure", {}).get("name")
        if name:
            found[name] = i
    return found


def _collect(app: Sphinx) -> list[dict[str, Any]]:
    env = app.env
    rows = []
    for docname in env.found_docs:
        if docname not in env.toc_fignumbers:
            continue
        numbers = env.toc_fignumbers[docname].get("figure", {})
        if not numbers:
            continue
        doctree = env.get_doctree(docname)
        cells = _figure_cells(Path(app.srcdir), docname)
        title = env.titles[docname].astext() if docname in env.titles else docname
        for fig in doctree.findall(nodes.figure):
            ids = fig.get("ids", [])
            names = fig.get("names", [])
            if not ids or ids[0] not in numbers:
                continue
            captions = list(fig.findall(nodes.caption))
            rows.append({
                "number": numbers[ids[0]],
                "caption": captions[0].astext() if captions else "",
                "docname": docname,
                "chapter": title,
                "label": names[0] if names else ids[0],
                "id": ids[0],
                "cell": cells.get(names[0]) if names else None,
            })
    rows.sort(key=lambda r: r["number"])
    return rows


def _fill(app: Sphinx, doctree: nodes.document, docname: str) -> None:
    placeholders = list(doctree.findall(list_of_figures))
    if not placeholders:
        return
    rows = _collect(app)
    table = nodes.table(classes=["list-of-figures"])
    group = nodes.tgroup(cols=4)
    table += group
    for width in (8, 60, 18, 24):
        group += nodes.colspec(colwidth=width)
    head = nodes.thead()
    group += head
    header = nodes.row()
    for text in ("Figure", "Caption", "Chapter", "Label (notebook cell)"):
        header += nodes.entry("", nodes.paragraph(text=text))
    head += header
    body = nodes.tbody()
    group += body
    for r in rows:
        row = nodes.row()
        number = ".".join(str(n) for n in r["number"])
        ref = nodes.reference("", f"Fig. {number}", internal=True,
                              refuri=app.builder.get_relative_uri(docname, r["docname"])
                              + "#" + r["id"])
        row += nodes.entry("", nodes.paragraph("", "", ref))
        row += nodes.entry("", nodes.paragraph(text=r["caption"]))
        row += nodes.entry("", nodes.paragraph(text=r["chapter"]))
        where = f"{r['docname']}.ipynb, cell {r['cell']}" if r["cell"] is not None else r["docname"]
        label = nodes.paragraph()
        label += nodes.literal(text=r["label"])
        label += nodes.Text(f" ({where})")
        row += nodes.entry("", label)
        body += row
    bib = nodes.literal_block(text=bibtex(app, rows), language="bibtex",
                              classes=["list-of-figures-bibtex"])
    for node in placeholders:
        node.replace_self([table, _bib_intro(), bib] if rows
                          else nodes.paragraph(text="(no figures yet)"))


def _bib_intro() -> nodes.paragraph:
    return nodes.paragraph(text="BibTeX entries for every figure (the key is the book's key "
                                "followed by the figure's label):")


def _repo_blob(app: Sphinx) -> str:
    """``https://github.com/OWNER/REPO/blob/BRANCH/`` from the Jupyter Book repository config."""
    opts = getattr(app.config, "html_theme_options", {}) or {}
    url = str(opts.get("repository_url", "")).rstrip("/")
    branch = str(opts.get("repository_branch", "main"))
    path = str(opts.get("path_to_docs", "")).strip("/")
    return f"{url}/blob/{branch}/" + (f"{path}/" if path else "") if url else ""


def bibtex(app: Sphinx, rows: list[dict[str, Any]]) -> str:
    """One ``@misc`` entry per figure, keyed ``advbook<year>:<label>``."""
    title = str(getattr(app.config, "html_title", "") or app.config.project)
    author = str(app.config.author or "The advbook authors")
    year = next((w for w in str(app.config.copyright).replace(",", " ").split()
                 if w.isdigit() and len(w) == 4), "")
    blob = _repo_blob(app)
    entries = []
    for r in rows:
        number = ".".join(str(n) for n in r["number"])
        caption = r["caption"].split(". ")[0].rstrip(".").replace("{", "").replace("}", "")
        where = f"{r['docname']}.ipynb"
        cell = f", cell {r['cell']}" if r["cell"] is not None else ""
        fields = [
            f"  title        = {{Figure {number}: {caption}}}",
            f"  author       = {{{{{author}}}}}",
            f"  howpublished = {{In: {title}, chapter ``{r['chapter']}''}}",
            f"  year         = {{{year}}}",
            f"  note         = {{Figure label \\texttt{{{r['label']}}}; drawn by {where}{cell}}}",
        ]
        if blob:
            fields.append(f"  url          = {{{blob}{where}}}")
        entries.append(f"@misc{{advbook{year}:{r['label']},\n" + ",\n".join(fields) + "\n}")
    return "\n\n".join(entries)


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_node(list_of_figures)
    app.add_directive("list-of-figures", ListOfFiguresDirective)
    app.connect("doctree-resolved", _fill)
    return {"version": "0.1", "parallel_read_safe": True, "parallel_write_safe": True}
