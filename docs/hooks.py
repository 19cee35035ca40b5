"""MkDocs hook: fill the generated reference pages from the code (the schema
and the parser), so they cannot drift from what fedforget accepts."""

from __future__ import annotations

MARKERS = {
    "<!-- generated: scenario reference -->": "scenario_reference",
    "<!-- generated: cli reference -->": "cli_reference",
}


def on_page_markdown(markdown: str, page, config, files) -> str:
    import fedforget.reference_docs as ref

    for marker, fn in MARKERS.items():
        if marker in markdown:
            markdown = markdown.replace(marker, getattr(ref, fn)())
    return markdown
