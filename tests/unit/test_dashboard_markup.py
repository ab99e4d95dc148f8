"""The dashboard never writes server data as markup (a stored district name is data)."""

from pathlib import Path

PAGE = Path(__file__).resolve().parents[2] / "api" / "static" / "dashboard.html"


def test_the_dashboard_uses_no_innerhtml_or_document_write() -> None:
    text = PAGE.read_text("utf-8")
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write"):
        assert sink not in text, sink
