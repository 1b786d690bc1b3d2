"""The claims' verdicts as the Snakemake report shows them (figure labels and captions).

They are read from the claims report of the configuration (``claims.json``, written by the
``claims`` rule), when the report is built, so that a report shows the current verdicts.

The captions (``workflow/report/*.rst``) are reStructuredText: Snakemake renders them with docutils,
where ``|Δ|`` is a substitution reference, ``*x*`` emphasis, ``name_`` a link, a leading ``- `` a
list, ... .  Text generated from the results (the verdicts and their reasons) therefore reaches a
caption only through :func:`report_verdicts`, which escapes it (:func:`rst_escape`); the labels are
plain text and stay unescaped.
"""

from __future__ import annotations

import json
import re
import string
from pathlib import Path

from ..foundations.registry import CLAIMS

_RST_SPECIAL = re.compile("([%s])" % re.escape(string.punctuation))


def rst_escape(text: str) -> str:
    """``text`` as reStructuredText that renders as exactly this text, inline or at a line start.

    Every ASCII punctuation character is backslash-escaped (so no inline markup, substitution,
    reference, role or block markup such as ``- `` or ``1.`` can start) and line breaks become spaces
    (so the text stays in its paragraph).  Other characters (``Δ``, ``≤``, ``⇔``) are not markup.
    """
    return _RST_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


def load_claims(path: str | Path) -> dict | None:
    """The claims report at ``path``, when it has been written (else None)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def claim_rows(report: dict | None, arch: str, claim: int) -> list[dict]:
    """The report's rows of one claim for one architecture (one per rewind step)."""
    return [c for c in (report or {}).get("claims", []) if c["arch"] == arch and int(c["claim"]) == int(claim)]


def verdict_text(report: dict | None, arch: str, claim: int, reasons: bool = True) -> str:
    """`rewind step t: <verdict> (<reason>)` of a claim for an architecture, per rewind step."""
    if report is None:
        return "not evaluated yet (the claims rule has not run)"
    rows = claim_rows(report, arch, claim)
    if not rows:
        return "not evaluated for this architecture"
    return "; ".join(
        f"rewind step {c['rewind_step']}: {c['verdict']}{' (%s)' % c['reason'] if reasons else ''}" for c in rows
    )


def report_verdicts(report: dict | None, archs) -> dict[str, dict[str, str]]:
    """Architecture -> claim number (a string) -> its verdict text, for the report's captions
    (reStructuredText, escaped by :func:`rst_escape`)."""
    return {arch: {str(n): rst_escape(verdict_text(report, arch, n)) for n in CLAIMS} for arch in archs}
