"""A Sphinx extension for this book: no script that needs the network on any page.

Jupyter Book 1.x always loads sphinx-thebe (live code cells through Binder), which adds an
inline configuration script naming a CDN (unpkg.com) and `sphinx-thebe.js` to every page.
The book does not use Thebe (its live demos run in the browser: book/_static/gpt.js), and
under Sphinx 7.4 the inline script is emitted twice, so every page threw "Identifier
'THEBE_JS_URL' has already been declared". This drops Thebe's scripts, style sheet and
configuration from every page.
"""

from __future__ import annotations


def _is_thebe(script) -> bool:
    filename = str(getattr(script, "filename", script) or "")
    body = str(getattr(script, "attributes", {}).get("body", ""))
    return "thebe" in filename.lower() or "THEBE_JS_URL" in body


def _drop_thebe(app, pagename, templatename, context, doctree):
    for key in ("script_files", "css_files"):
        if context.get(key):
            context[key] = [s for s in context[key] if not _is_thebe(s)]


def _drop_thebe_config(app, doctree, docname):
    """sphinx-thebe also appends its (inert) Binder configuration to every page: drop it."""
    from docutils import nodes

    for node in list(doctree.findall(nodes.raw)):
        if "x-thebe-config" in node.astext() or node.astext().startswith("<script>kernelName"):
            node.parent.remove(node)


def setup(app):
    app.connect("html-page-context", _drop_thebe)
    app.connect("doctree-resolved", _drop_thebe_config, priority=900)  # after sphinx-thebe adds it
    return {"parallel_read_safe": True, "parallel_write_safe": True}
