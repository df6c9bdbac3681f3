"""How the controller serves the console: the page and its files without a login, a strict CSP,
caching by content hash, and HTTPS with a certificate it makes (trusted through its local CA)."""

from __future__ import annotations

import re
import ssl
import stat

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509

from broadcaster.errors import InvalidInput
from broadcaster.web import console, tls
from tests.support.harness import controller
from tests.support.sites import small_site


@pytest.fixture
async def client(tmp_path, data, tag):
    import broadcaster.site as zones

    site = zones.load(small_site(tmp_path / "zones.yaml", villages=1, horns=2, columns=1))
    async with controller(site, data, tag, accounts=True, mdns=False) as (_, c):
        yield c


async def test_the_page_is_served_without_a_login_with_a_strict_policy(client):
    resp = await client.get("/")
    assert resp.status == 200 and resp.content_type == "text/html"
    csp = resp.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "frame-ancestors 'none'" in csp and "connect-src 'self'" in csp
    assert resp.headers["Cache-Control"] == "no-cache"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    page = await resp.text()
    assert "<script" in page and not re.search(r"<script>[^<]", page), "no inline script"
    assert "http://" not in page and "https://" not in page, "nothing from another host"
    # the API behind it still needs a login
    assert (await client.get("/api/speakers")).status == 401


async def test_assets_are_cached_by_content_hash_and_revalidated_otherwise(client):
    page = await (await client.get("/")).text()
    ref = re.search(r'src="(/console/app\.js\?v=([0-9a-f]{12}))"', page)
    assert ref, page
    versioned = await client.get(ref[1])
    assert versioned.status == 200 and "immutable" in versioned.headers["Cache-Control"]
    assert versioned.content_type == "text/javascript"
    plain = await client.get("/console/app.js")
    assert plain.headers["Cache-Control"] == "no-cache"
    again = await client.get("/console/app.js", headers={"If-None-Match": plain.headers["ETag"]})
    assert again.status == 304
    # imports between modules carry their versions too, so a new release is never half cached
    app_js = await versioned.text()
    assert re.search(r'from "\./api\.js\?v=' + ref[2] + '"', app_js), app_js[:400]


async def test_an_unknown_console_file_is_a_404_naming_it(client):
    resp = await client.get("/console/../../etc/passwd")
    assert resp.status == 404
    resp = await client.get("/console/nothing.js")
    assert resp.status == 404 and "nothing.js" in (await resp.json())["message"]


def test_every_file_the_page_names_exists():
    assets = console.load_assets()
    names = set(assets)
    text = "\n".join(
        a.body.decode() for n, a in assets.items() if n.endswith((".html", ".js", ".css"))
    )
    for ref in re.findall(r"/console/([\w./-]+?)(?:\?v=\w+)?[\"')]", text):
        assert ref in names, f"{ref} is referenced but not in broadcaster/web/console/"
    for n, a in assets.items():
        if n.endswith(".js"):
            for rel in re.findall(r'from "\./([\w.-]+?)(?:\?v=\w+)?"', a.body.decode()):
                assert rel in names, f"{n} imports ./{rel}, which is missing"


def test_auto_certificate_is_made_once_under_the_data_dir(tmp_path):
    files = tls.auto_certificate(tmp_path, ["127.0.0.1", "console.example"], "sd")
    assert files.ca == tmp_path / "tls" / "ca.pem"
    assert stat.S_IMODE(files.key.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "tls" / "ca.key").stat().st_mode) == 0o600
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "console.example" in names.get_values_for_type(x509.DNSName)
    before = files.cert.read_bytes()
    assert tls.auto_certificate(tmp_path, ["127.0.0.1"], "sd").cert.read_bytes() == before
    # a new host name: a new server certificate from the same CA (devices keep trusting it)
    ca = (tmp_path / "tls" / "ca.pem").read_bytes()
    tls.auto_certificate(tmp_path, ["192.168.1.10"], "sd")
    assert files.cert.read_bytes() != before and (tmp_path / "tls" / "ca.pem").read_bytes() == ca


def test_tls_choices_are_checked(tmp_path):
    assert tls.choose(tmp_path, "127.0.0.1", "sd", auto=False, cert=None, key=None) is None
    with pytest.raises(InvalidInput, match="go together"):
        tls.choose(tmp_path, "127.0.0.1", "sd", auto=False, cert="a.pem", key=None)
    with pytest.raises(InvalidInput, match="not both"):
        tls.choose(tmp_path, "127.0.0.1", "sd", auto=True, cert="a.pem", key="a.key")
    missing = tls.TlsFiles(tmp_path / "no.pem", tmp_path / "no.key")
    with pytest.raises(InvalidInput, match="no.pem does not exist"):
        tls.server_context(missing)
    mine = tls.auto_certificate(tmp_path / "a", ["127.0.0.1"])
    other = tls.auto_certificate(tmp_path / "b", ["127.0.0.1"])
    with pytest.raises(InvalidInput, match="cannot be used together"):
        tls.server_context(tls.TlsFiles(mine.cert, other.key))


async def test_https_serves_the_console_to_a_client_that_trusts_the_local_ca(tmp_path):
    files = tls.auto_certificate(tmp_path, ["127.0.0.1"], "sd")
    app = web.Application()
    console.add_routes(app)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls.server_context(files))
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # the port 0 became
    try:
        url = f"https://127.0.0.1:{port}/"
        trusting = ssl.create_default_context(cafile=str(files.ca))
        async with aiohttp.ClientSession() as s:
            async with s.get(url, ssl=trusting) as resp:
                assert resp.status == 200 and "广播控制台" in await resp.text()
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await s.get(url, ssl=ssl.create_default_context())
    finally:
        await runner.cleanup()
