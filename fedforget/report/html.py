"""HTML pieces shared by the run and study reports: inline CSS, the figure-count
script a headless browser test reads, escaped tables, figures and notes."""

from __future__ import annotations

import html
from collections.abc import Sequence

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;max-width:1400px;
 padding:0 1rem;color:#1d1d1f;line-height:1.45}
h1{font-size:1.6rem;margin-bottom:.3rem}h2{font-size:1.25rem;margin-top:2.2rem;border-bottom:1px solid #ddd}
h3{font-size:1.05rem;margin-top:1.4rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.84rem}
th,td{border:1px solid #d6d6d6;padding:.25rem .5rem;text-align:right;white-space:nowrap}
th{background:#f3f3f5;text-align:center;white-space:normal;min-width:3.5rem}
.scroll{overflow-x:auto;max-width:100%}td:first-child,th:first-child{text-align:left}
table.meta td,table.meta th{text-align:left;white-space:normal}
tr.ref td{background:#fafafa;font-style:italic}
figure{margin:.8rem 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.82rem;color:#555}
.note{background:#f6f8fa;border-left:4px solid #8aa;padding:.4rem .7rem;margin:.6rem 0}
.warn{background:#fff6e5;border-left:4px solid #e0a000;padding:.4rem .7rem;margin:.6rem 0}
.ok{background:#eef8ee;border-left:4px solid #4a4;padding:.4rem .7rem;margin:.6rem 0}
.flag{color:#b00020;font-weight:600;margin:.2rem 0}
.small{font-size:.82rem;color:#555}
.headline{background:#eef3fb;border-left:5px solid #2a5db0;padding:.5rem .9rem;margin:.8rem 0;font-size:.95rem}
.headline ul{margin:.3rem 0 .3rem 1.1rem;padding:0}
details.warn summary{cursor:pointer;font-weight:600}
"""


# Counts the figures the browser could decode and the tables wider than the window (a headless test reads these).
SCRIPT = """
window.addEventListener("load", function () {
  var imgs = document.getElementsByTagName("img"), ok = 0;
  for (var i = 0; i < imgs.length; i++) { if (imgs[i].naturalWidth > 0) { ok++; } }
  document.body.dataset.figuresRendered = String(ok);
  document.body.dataset.figuresTotal = String(imgs.length);
  var wide = document.querySelectorAll(".scroll"), over = 0;
  for (var j = 0; j < wide.length; j++) { if (wide[j].scrollWidth > wide[j].clientWidth + 1) { over++; } }
  document.body.dataset.tablesOverflowing = String(over);
});
"""


esc = html.escape


def figure_html(uri: str, alt: str, caption: str) -> str:
    return f'<figure><img src="{uri}" alt="{esc(alt)}"><figcaption>{esc(caption)}</figcaption></figure>'


def table_html(headers: Sequence[str], rows: Sequence[Sequence[str]], cls: str = "",
           titles: Sequence[str] | None = None, row_classes: Sequence[str] | None = None) -> str:
    """An HTML table; cells are plain text (escaped here)."""
    ths = "".join(
        f'<th title="{esc(titles[i])}">{esc(h)}</th>' if titles and titles[i] else f"<th>{esc(h)}</th>"
        for i, h in enumerate(headers)
    )
    body = []
    for i, row in enumerate(rows):
        rc = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        body.append(f"<tr{rc}>" + "".join(f"<td>{esc(str(c))}</td>" for c in row) + "</tr>")
    c = f' class="{cls}"' if cls else ""
    # Wide tables scroll on their own instead of widening the page.
    return f'<div class="scroll"><table{c}><thead><tr>{ths}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def note_html(text: str, kind: str = "note") -> str:
    return f'<div class="{kind}">{esc(text)}</div>'
