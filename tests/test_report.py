"""The report's captions (workflow/report/*.rst) render without a docutils message.

Snakemake renders each caption as a Jinja template (the caption file followed by its own link targets
for every category and file of the report), then through docutils; a docutils warning or error shows
up in the report as a "System Message" box. These tests render every caption the same way, with the
verdicts of real claims reports (their reasons hold ``|Δ|``, ``'iff'``, ``R_L+1``, ...) and with texts
made of every reStructuredText pitfall, and fail on any docutils message. Seconds, no Snakemake run;
tests/test_workflow.py builds the real report of config/test.yaml and renders it in a browser.
"""

from __future__ import annotations

import functools
import html
import inspect
import io
import re
import string
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import snakemake.report
from docutils.core import publish_parts
from jinja2 import Environment, StrictUndefined
from test_claims import full_results

from unmasking import claims as C
from unmasking.foundations.netcdf import combine
from unmasking.foundations.registry import CLAIMS, FIGURES
from unmasking.workflow.report import report_verdicts, rst_escape, verdict_text

REPO = Path(__file__).resolve().parents[1]
CAPTIONS = REPO / "workflow" / "report"
ARCHS = ["cnn", "mlp"]

# Texts that are markup in reStructuredText, inline and at the start of a line.
PITFALLS = [
    "|Δ| 0.468 > 0.4",
    "|p*_theory - p*_experiment|",
    "*emphasis* and **strong** and p* alone",
    "w_L, R_L+1, name_ and `name`_ and __anonymous",
    "``literal`` and `interpreted` and :math:`x` and :role:",
    "- a leading dash",
    "* a leading star",
    "1. a leading number",
    "#. auto",
    "a) letter",
    ".. comment",
    ".. |sub| replace:: x",
    "[1]_ footnote and [#]_ and [cite]_",
    "<http://example.org>`_ and http://example.org",
    ">>> doctest",
    "ends with a colon::",
    "back\\slash and trailing \\",
    "two\nlines\n\n- and a list",
    "| line block",
    "+-----+\n| x |\n+-----+",
    "=====",
    "term\n  definition",
    ":field: value",
    "'quoted' \"double\" (paren) [bracket] {brace} <angle> & ; ! ? ~ ^ % $ # @ = + /",
]


def render(rst: str) -> tuple[str, str]:
    """docutils' HTML body of ``rst`` (as Snakemake calls it) and every warning or error docutils reported
    (report level 2, Snakemake's; level 1 would list each link target Snakemake adds but the caption never uses)."""
    messages = io.StringIO()
    body = publish_parts(rst, writer="html", settings_overrides={"report_level": 2, "warning_stream": messages})["body"]
    return body, messages.getvalue()


def visible_text(body: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", body)).split())


@pytest.mark.parametrize("text", PITFALLS)
def test_rst_escape_renders_exactly_the_text(text):
    body, messages = render(rst_escape(text))
    assert messages == ""
    assert body.count("<p>") == 1, body  # one paragraph: no list, comment, title, table, literal block
    assert visible_text(body) == " ".join(text.split())
    # also inside a sentence, as the captions use it
    body, messages = render(f"*Verdict.* {rst_escape(text)}. The numbers behind it.")
    assert messages == "" and " ".join(text.split()) in visible_text(body)


def test_rst_escape_escapes_every_ascii_punctuation_character():
    assert rst_escape(string.punctuation) == "".join("\\" + c for c in string.punctuation)
    assert rst_escape("Δ ≤ ⇔ − ε_match") == "Δ ≤ ⇔ − ε\\_match"


def snakemake_caption_links() -> str:
    """The link targets Snakemake appends to every caption (snakemake/report/__init__.py)."""
    source = inspect.getsource(snakemake.report)
    match = re.search(r'rst_links = textwrap\.dedent\(\s*"""(.*?)"""', source, re.S)
    assert match, "Snakemake no longer builds its caption links as this test expects: update snakemake_caption_links"
    return textwrap.dedent(match.group(1))


@functools.cache
def claims_reports() -> list[dict | None]:
    """Real reports (synthetic results that decide every claim: the reasons carry |Δ| etc.) and one
    whose every text is made of reStructuredText pitfalls."""
    parts = [full_results(a, t) for a in ARCHS for t in (0, 40)]
    results = C.evaluate({exp: combine([p[exp] for p in parts], data_vars="minimal") for exp in parts[0]})
    real = C.report(results, C.Thresholds(), "test")
    assert any("|Δ|" in c["reason"] for c in real["claims"])
    hostile = {
        "claims": [
            {"arch": a, "claim": n, "rewind_step": i, "verdict": text, "reason": text}
            for a in ARCHS
            for n in CLAIMS
            for i, text in enumerate(PITFALLS)
        ]
    }
    return [real, hostile, None]


def caption_context(report: dict | None, caption: str, arch: str, split: str) -> dict:
    """What Snakemake passes to a caption's template (the `snakemake` object, categories, files)."""
    config = {"name": "test", "_report_verdicts": report_verdicts(report, ARCHS)}
    params = SimpleNamespace(
        name="test",
        split=split,
        figure=caption,
        levels=2,
        rewind_steps="0, 40",
        seeds="0, 1",
        eps_barrier=0.02,
        match_floor=0.01,
        claim=FIGURES[caption].claim if caption in FIGURES else 0,
    )
    sm = SimpleNamespace(params=params, wildcards=SimpleNamespace(arch=arch), config=config)
    categories = {snakemake.report.Category(f.title): None for f in FIGURES.values()}
    categories[snakemake.report.Category("Claims")] = None
    files = [
        SimpleNamespace(target=f"{fig}{suffix}.png", path=f"figures/test/{a}/{fig}{suffix}.png")
        for a in ARCHS
        for fig in FIGURES
        for suffix in ("", "_train")
    ] + [SimpleNamespace(target="claims.html", path="figures/test/claims.html")]
    seen: set[str] = set()  # Snakemake keeps one file per name
    files = [f for f in files if not (f.target in seen or seen.add(f.target))]
    return {"snakemake": sm, "categories": categories, "files": files}


def test_the_captions_are_the_figures_and_the_claims():
    assert {p.stem for p in CAPTIONS.glob("*.rst")} == {*FIGURES, "claims"}
    smk = (REPO / "workflow" / "rules" / "figures.smk").read_text()
    assert 'caption=f"../report/{_fig_id}.rst"' in smk and 'caption="../report/claims.rst"' in smk


@pytest.mark.parametrize("caption", sorted(p.stem for p in CAPTIONS.glob("*.rst")))
def test_every_caption_renders_without_docutils_messages(caption):
    env = Environment(trim_blocks=True, lstrip_blocks=True, undefined=StrictUndefined)
    source = (CAPTIONS / f"{caption}.rst").read_text()
    template = env.from_string(source + snakemake_caption_links())
    paragraphs = len(re.split(r"\n\s*\n", source.strip()))  # the file's paragraphs, kept apart
    for report in claims_reports():
        for arch in ARCHS:
            for split in ("test", "train"):
                body, messages = render(template.render(**caption_context(report, caption, arch, split)))
                assert messages == "", f"{caption} ({arch}, {split}):\n{messages}"
                assert "system-message" not in body and "problematic" not in body
                # a block tag at a line end eats the newline after it (trim_blocks): `{% endif +%}` keeps it
                assert body.count("<p>") == paragraphs, f"{caption} ({arch}, {split}): paragraphs merged\n{body}"
                if caption in FIGURES:  # the verdict shows as it reads in claims.json
                    expected = " ".join(verdict_text(report, arch, FIGURES[caption].claim).split())
                    assert expected in visible_text(body), (caption, expected)
