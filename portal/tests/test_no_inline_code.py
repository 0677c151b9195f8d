"""The pages hold no inline code, so the Content-Security-Policy needs no 'unsafe-inline': no
<script> without src, no <style>, no on… handler and no style attribute in any template."""

import re
from pathlib import Path

from django.conf import settings

TEMPLATES = Path(settings.BASE_DIR) / "templates"
INLINE = {
    "inline script": re.compile(r"<script\b(?![^>]*\bsrc=)[^>]*>", re.I),
    "style element": re.compile(r"<style\b", re.I),
    "event handler attribute": re.compile(r"\son[a-z]+\s*=", re.I),
    "style attribute": re.compile(r"\sstyle\s*=", re.I),
    "javascript: URL": re.compile(r"javascript:", re.I),
}


def test_no_template_holds_inline_code():
    found = [
        f"{path.relative_to(TEMPLATES)}:{number}: {what}"
        for path in sorted(TEMPLATES.rglob("*.html"))
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        for what, pattern in INLINE.items()
        if pattern.search(line)
    ]
    assert found == []


def test_the_scan_finds_inline_code():
    lines = ['<div style="width: 3%">', '<input onchange="x()">', "<script>alert(1)</script>", "<style>"]
    for line in lines:
        assert any(pattern.search(line) for pattern in INLINE.values()), line
    assert not any(p.search('<script src="/static/x.js" defer></script>') for p in INLINE.values())
