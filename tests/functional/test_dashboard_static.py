"""The dashboard's shell and files are served without a credential (they hold no data),
from the installed package, with the right types; nothing outside /static is reachable."""

from __future__ import annotations

import httpx

from api.app import create_app
from infra.settings import Settings


def client() -> httpx.AsyncClient:
    app = create_app(Settings())
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def test_the_shell_and_its_files_need_no_token() -> None:
    async with client() as c:
        page = await c.get("/")
        assert page.status_code == 200 and 'id="login-form"' in page.text
        for path, kind in (
            ("/static/dashboard.js", "javascript"),
            ("/static/dashboard.css", "text/css"),
            ("/static/vendor/uPlot.iife.min.js", "javascript"),
            ("/static/vendor/uPlot.min.css", "text/css"),
        ):
            r = await c.get(path)
            assert r.status_code == 200, path
            assert kind in r.headers["content-type"], (path, r.headers["content-type"])


async def test_nothing_but_the_static_folder_is_served() -> None:
    async with client() as c:
        assert (await c.get("/static/nothing.js")).status_code == 404
        assert (await c.get("/static/../app.py")).status_code == 404
        assert (await c.get("/static/%2e%2e/app.py")).status_code == 404
