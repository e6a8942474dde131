"""The console's own routes: the page and its files, who a token is, the user list."""

from __future__ import annotations

import httpx

from tests.conftest import ADMIN, World


async def test_the_page_is_served_with_a_strict_policy(client: httpx.AsyncClient) -> None:
    r = await client.get("/console", headers={"Authorization": ""})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    policy = r.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy
    assert r.headers["referrer-policy"] == "no-referrer"
    assert r.headers["cache-control"] == "no-store"
    assert '<script src="/console/static/console.js"' in r.text
    for name, kind in [
        ("console.js", "text/javascript"),
        ("console.css", "text/css"),
        ("icon.svg", "image/svg+xml"),
    ]:
        asset = await client.get(f"/console/static/{name}")
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(kind), name


async def test_only_the_console_files_are_served(client: httpx.AsyncClient) -> None:
    for name in [
        "nope.js",
        "__init__.py",
        "..%2F__init__.py",
        "..%2F..%2Fconfig.py",
        "%2Fetc%2Fpasswd",
    ]:
        r = await client.get(f"/console/static/{name}")
        assert r.status_code == 404, name
        assert "detail" in r.json()


async def test_whoami_tells_admin_user_and_app_apart(
    client: httpx.AsyncClient, world: World
) -> None:
    async def who(token: str | None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}" if token else ""}
        return await client.get("/console/api/whoami", headers=headers)

    assert (await who(ADMIN)).json() == {"role": "admin"}
    assert (await who(world.user_token)).json() == {"role": "user", "uid": world.uid, "name": "Ana"}
    assert (await who(world.app_secret)).json() == {"role": "app", "app_id": world.app_id}
    for bad in [None, "ut_" + "0" * 48, "sk_" + "0" * 32, "nonsense"]:
        r = await who(bad)
        assert r.status_code == 401 and r.json()["detail"], bad


async def test_the_user_list_is_for_the_admin(client: httpx.AsyncClient, world: World) -> None:
    r = await client.get("/console/api/users")
    assert r.status_code == 200
    assert [(u["uid"], u["name"]) for u in r.json()["users"]] == [(world.uid, "Ana")]
    r = await client.get(
        "/console/api/users", headers={"Authorization": f"Bearer {world.user_token}"}
    )
    assert r.status_code == 401
    assert (await client.get("/console/api/users?limit=0")).status_code == 422
