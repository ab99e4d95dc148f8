"""The dashboard's files, read as text: it never writes server data as markup (a stored
district name is data), loads nothing from another origin (health offices often have no
internet, and a CDN would see who uses the page), ships every file it loads with the
package, maps all of Hà Nội's 30 districts, and shows each role only panels whose routes
the access policy lets that role call."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from html.parser import HTMLParser
from pathlib import Path

from api.access import POLICY

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "api" / "static"
PAGE = STATIC / "dashboard.html"
SCRIPT = STATIC / "dashboard.js"
STYLE = STATIC / "dashboard.css"
# The only absolute URL the page's own code may hold: an XML namespace, never fetched.
NAMESPACES = {"http://www.w3.org/2000/svg"}


# What the page calls before it knows the role (every person may).
SHELL_ROUTES = {("GET", "/v1/me")}


class _Panels(HTMLParser):
    """Each panel's roles (data-roles) and routes (data-routes)."""

    def __init__(self) -> None:
        super().__init__()
        self.panels: dict[str, tuple[set[str], list[str]]] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if "data-roles" in a:
            routes = [r.strip() for r in a.get("data-routes", "").split(",") if r.strip()]
            self.panels[a["id"]] = (set(a["data-roles"].split()), routes)


def _panels() -> dict[str, tuple[set[str], list[str]]]:
    parser = _Panels()
    parser.feed(PAGE.read_text("utf-8"))
    return parser.panels


def _shape(path: str) -> str:
    """A path with its parameters blanked: ``/v1/clusters/{cluster_id}/graph`` and the
    script's ``/v1/clusters/${…}/graph`` both become ``/v1/clusters/*/graph``."""
    return re.sub(r"\$?\{[^}]*\}", "*", path.split("?")[0])


class _Refs(HTMLParser):
    """Every URL the page makes the browser load, and its Content-Security-Policy."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.csp = ""
        self.inline_scripts = 0
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        for key in ("src", "href", "action", "poster", "data"):
            if key in a and tag != "a":
                self.urls.append(a[key])
        if tag == "meta" and a.get("http-equiv", "").lower() == "content-security-policy":
            self.csp = a.get("content", "")
        self._in_script = tag == "script" and "src" not in a

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_scripts += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False


def _refs() -> _Refs:
    parser = _Refs()
    parser.feed(PAGE.read_text("utf-8"))
    return parser


def test_the_dashboard_uses_no_innerhtml_or_document_write() -> None:
    for path in (PAGE, SCRIPT):
        text = path.read_text("utf-8")
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert sink not in text, f"{path.name}: {sink}"


def test_the_page_loads_only_its_own_files() -> None:
    refs = _refs()
    assert refs.urls, "the page references no script or style at all"
    for url in refs.urls:
        assert url.startswith(("/", "data:")) and not url.startswith("//"), url
        if url.startswith("/static/"):
            assert (STATIC / url.removeprefix("/static/")).is_file(), f"{url} is not shipped"
    assert refs.inline_scripts == 0, "inline script: the Content-Security-Policy forbids it"
    policy = dict(
        (part.split()[0], part.split()[1:]) for part in refs.csp.split(";") if part.strip()
    )
    assert policy.get("default-src") == ["'self'"] and policy.get("script-src") == ["'self'"]
    assert policy.get("connect-src") == ["'self'"]


def test_the_script_and_style_name_no_other_origin() -> None:
    code = SCRIPT.read_text("utf-8")
    found = set(re.findall(r"""https?://[^\s"'`)]+""", code))
    assert found <= NAMESPACES, found - NAMESPACES
    assert not re.search(r"^\s*import\b", code, re.M), "the page's module imports nothing"
    style = STYLE.read_text("utf-8")
    assert "@import" not in style and not re.search(r"url\(\s*['\"]?(https?:)?//", style)


def test_every_vendored_file_has_its_licence_and_no_remote_source() -> None:
    vendor = STATIC / "vendor"
    readme = (vendor / "README.md").read_text("utf-8")
    for path in vendor.iterdir():
        if path.suffix in (".js", ".css"):
            assert path.name in readme, f"{path.name} is not listed in vendor/README.md"
            text = path.read_text("utf-8")
            assert "sourceMappingURL=http" not in text and "@import" not in text, path.name
    assert (vendor / "uPlot.LICENSE").is_file()


def test_the_package_ships_every_static_file() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    globs = config["tool"]["setuptools"]["package-data"]["api"]
    for path in STATIC.rglob("*"):
        if path.is_file():
            rel = path.relative_to(ROOT / "api").as_posix()
            assert any(fnmatch.fnmatch(rel, g) for g in globs), f"{rel} is not package data"


def test_the_tile_map_has_all_30_districts_each_on_its_own_tile() -> None:
    reference = (ROOT / "registry" / "data" / "hanoi_districts.csv").read_text("utf-8")
    codes = {line.split(",")[0]: line.split(",")[1] for line in reference.splitlines()[1:]}
    tiles = re.findall(
        r'\["(\d{3})", "([^"]+)", (\d+), (\d+)\]', SCRIPT.read_text("utf-8").split("DISTRICTS")[1]
    )
    assert {code: name for code, name, _, _ in tiles} == codes
    positions = [(col, row) for _, _, col, row in tiles]
    assert len(set(positions)) == len(positions) == 30
    assert all(0 <= int(col) < 8 for col, _ in positions)


def test_each_role_sees_only_panels_whose_routes_it_may_call() -> None:
    panels = _panels()
    assert len(panels) >= 10
    for panel, (roles, routes) in panels.items():
        assert routes, f"{panel} names no data-routes"
        for entry in routes:
            m = re.fullmatch(r"(GET|POST|PUT|DELETE) (/\S+)(?: \(([\w ]+)\))?", entry)
            assert m, f"{panel}: cannot read route {entry!r}"
            method, path, only = m.groups()
            allowed = POLICY.get((method, path))
            assert allowed is not None, f"{panel}: {method} {path} is not in api/access.py POLICY"
            users = set(only.split()) if only else roles
            assert users <= roles, f"{panel}: {entry} names roles the panel is not shown to"
            assert users <= allowed, f"{panel}: {sorted(users - allowed)} may not {method} {path}"


def test_every_route_the_script_calls_belongs_to_a_panel() -> None:
    declared = {_shape(r.split()[1]) for _, routes in _panels().values() for r in routes}
    declared |= {_shape(path) for _, path in SHELL_ROUTES}
    called = {_shape(p) for p in re.findall(r"""["`](/v1/[^"`?]*)""", SCRIPT.read_text("utf-8"))}
    assert called, "found no route in the script"
    assert called <= declared, f"called but not in any panel's data-routes: {called - declared}"
