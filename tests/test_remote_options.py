"""`verify`/`bench` remote options without a browser: --remote parsing, labels that never show
credentials, the capabilities sent per browser, which address each browser is given, and one-line
exit-2 errors for every bad option (checked before anything starts)."""

from __future__ import annotations

import pytest

from ulpq_build.browsers import webdriver_capabilities
from ulpq_build.cli import main
from ulpq_build.endpoints import browser_specs, page_base, parse_remote, secure_origin_needed
from ulpq_build.errors import UserError
from ulpq_build.serve import serving


@pytest.mark.parametrize("text, protocol, name, url", [
    ("chromium=ws://grid:3000/", "playwright", "chromium", "ws://grid:3000/"),
    ("firefox=wss://cloud.example/pw?caps=%7B%7D&key=s3cret", "playwright", "firefox", "wss://cloud.example/pw?caps=%7B%7D&key=s3cret"),
    ("Safari=http://mac.local:4444/", "webdriver", "safari", "http://mac.local:4444/"),
    ("webdriver+https://u:k@hub.example/wd/hub", "webdriver", "", "https://u:k@hub.example/wd/hub"),
    ("http://127.0.0.1:4444/?a=b", "webdriver", "", "http://127.0.0.1:4444/?a=b"),
])
def test_remote_values_parse(text, protocol, name, url):
    spec = parse_remote(text)
    assert (spec.protocol, spec.name, spec.endpoint) == (protocol, name, url)


def test_labels_and_shown_endpoints_never_carry_credentials():
    specs = browser_specs(["chromium"], ["firefox=wss://user:key@cloud.example:443/pw?key=s3cret",
                                         "webdriver+https://u:k@hub.example/wd/hub", "https://u:k@hub.example/wd/hub"])
    assert [s.label for s in specs] == ["chromium", "firefox@cloud.example:443", "webdriver@hub.example",
                                        "webdriver@hub.example#2"]
    assert specs[1].shown == "wss://cloud.example:443/pw" and specs[2].shown == "https://hub.example/wd/hub"
    assert not any("key" in s.label + s.shown or "u:k" in s.shown for s in specs)


@pytest.mark.parametrize("text, says", [
    ("ws://grid:3000/", "browser type to connect with"),
    ("safari=ws://grid:3000/", "browser type to connect with"),
    ("opera=http://grid:4444/", "unknown WebDriver browser 'opera'"),
    ("gopher://grid/", "unknown scheme 'gopher'"),
    ("chromium=ws:///nohost", "no host"),
    ("http://grid:99999/", "not a URL"),
])
def test_bad_remote_values_are_refused(text, says):
    with pytest.raises(UserError, match=says):
        parse_remote(text)


def test_capabilities_per_browser_with_extras_merged():
    [chrome, firefox, safari, plain] = browser_specs([], ["chrome=http://g:4444/", "firefox=http://g:4444/",
                                                         "safari=http://mac:4444/", "http://g:4444/"],
                                                     '{"platformName": "mac", "goog:chromeOptions": {"binary": "/b"}}')
    caps = webdriver_capabilities(chrome, "http://127.0.0.1:8000/")
    assert caps["browserName"] == "chrome" and caps["platformName"] == "mac"
    assert caps["goog:chromeOptions"] == {"args": ["--enable-unsafe-webgpu"], "binary": "/b"}  # merged, not replaced
    assert webdriver_capabilities(safari, "http://127.0.0.1:8000/") == {"browserName": "safari", "platformName": "mac",
                                                                         "goog:chromeOptions": {"binary": "/b"}}
    assert webdriver_capabilities(plain, "http://127.0.0.1:8000/")["platformName"] == "mac"
    # a page on a plain-http LAN address: treated as a secure context where the browser allows it
    lan = "http://192.0.2.2:8000/"
    assert "--unsafely-treat-insecure-origin-as-secure=http://192.0.2.2:8000" in \
        webdriver_capabilities(chrome, lan)["goog:chromeOptions"]["args"]
    assert webdriver_capabilities(firefox, lan)["moz:firefoxOptions"]["prefs"]["dom.securecontext.allowlist"] == "192.0.2.2"
    assert secure_origin_needed("https://example.com/app/") is None and secure_origin_needed("http://[::1]:80/") is None


def test_each_browser_is_given_an_address_it_can_reach(tmp_path):
    specs = browser_specs(["chromium"], ["chromium=ws://192.0.2.9:3000/", "safari=http://192.0.2.9:4444/"])
    with serving(tmp_path) as server:  # loopback: the Playwright endpoint tunnels it, WebDriver cannot
        local, playwright, webdriver = (page_base(s, server) for s in specs)
        assert local == playwright == server.url and server.url.startswith("http://127.0.0.1:")
        assert webdriver == server.url
    with serving(tmp_path, host="0.0.0.0") as server:  # every interface: the address on the route to the peer
        local, playwright, webdriver = (page_base(s, server) for s in specs)
        assert local.startswith("http://127.0.0.1:")
        assert playwright == webdriver and not webdriver.startswith("http://127.") and webdriver.endswith(
            f":{server.server_address[1]}/")
    with serving(tmp_path, host="0.0.0.0", public_url="https://tunnel.example/app") as server:
        assert page_base(specs[1], server) == page_base(specs[2], server) == "https://tunnel.example/app/"
        assert page_base(specs[0], server).startswith("http://127.0.0.1:")


@pytest.mark.parametrize("args, says", [
    (["--remote", "ws://grid:3000/"], "browser type to connect with"),
    (["--remote", "chromium=ws://grid:3000/", "--capabilities", "{oops"], "--capabilities: not JSON"),
    (["--remote", "chromium=ws://grid:3000/", "--capabilities", "{}x"], "--capabilities: not JSON"),
    (["--remote", "chromium=ws://grid:3000/", "--capabilities", '{"a": 1}'], "applies to WebDriver endpoints only"),
    (["--remote", "http://grid:4444/", "--capabilities", "[1]"], "give a JSON object"),
    (["--browsers", "safari"], "--browsers: unknown browser 'safari'"),
    (["--browsers", ""], "no browser to run"),
    (["--remote", "http://grid:4444/", "--public-url", "ftp://x/"], "--public-url ftp://x/"),
    (["--remote", "http://grid:4444/", "--port", "70000"], "--port 70000"),
    (["--remote", "http://grid:4444/", "--host", "203.0.113.77"], "--host 203.0.113.77: cannot listen there"),
])
def test_bad_browser_options_are_one_line(tmp_path, capsys, args, says):
    bundle = tmp_path / "b"
    bundle.mkdir()
    if "--host" in args:  # the host is tried when the bundle is served: give it a real bundle
        assert main(["bundle", "--model", "builtin:mlp", "--format", "int8", "--out", str(bundle / "x")]) == 0
        bundle = bundle / "x"
        capsys.readouterr()
    assert main(["verify", str(bundle), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0], err


def test_bench_refuses_bad_remote_values_before_building(tmp_path, capsys):
    assert main(["bench", "--model", "builtin:vit", "--remote", "edge=ws://grid:3000/", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "browser type to connect with" in err[0], err
    assert not (tmp_path / "o").exists()
