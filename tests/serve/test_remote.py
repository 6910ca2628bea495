"""Remote images (`--allow-remote-images`, minigptv2/serve/remote.py): the address rules, and the fetch (checked
connections, redirects, deadline, size cap), through the real server.

No test here touches DNS or the network: the `net` fixture stubs `remote.resolve` (a table of names, and numeric
hosts parsed by getaddrinfo with AI_NUMERICHOST, which never sends a query) and `remote.connect` (it records every
address it is asked for and only ever opens a socket to a loopback test server standing in for a public one).
"""
import contextlib
import dataclasses
import http.server
import socket
import threading
import time
import urllib.parse

import pytest
from fastapi.testclient import TestClient

from helpers import tiny_model
from minigptv2.serve import remote
from minigptv2.serve import server as srv
from test_server import forced_generate, png, user

PUBLIC_A, PUBLIC_B = "93.184.216.34", "2606:4700::1111"      # stand-ins for public hosts, served on loopback


class FakeNet:
    def __init__(self):
        self.names: dict[str, list[str]] = {"localhost": ["127.0.0.1", "::1"]}
        self.routes: dict[str, int] = {}       # public address -> port of the loopback test server playing it
        self.default_route: int | None = None  # the port for any other address (the fuzz tests)
        self.resolved: list[str] = []
        self.connected: list[tuple[str, int]] = []

    def resolve(self, host, port):
        self.resolved.append(host)
        if host in self.names:
            return list(self.names[host])
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
        return list(dict.fromkeys(i[4][0] for i in infos))

    def connect(self, addr, port, timeout):
        self.connected.append((addr, port))
        port = self.routes.get(addr, self.default_route)
        if port is None:
            raise ConnectionRefusedError(f"test network: nothing at {addr}")
        return socket.create_connection(("127.0.0.1", port), timeout=timeout)


@pytest.fixture
def net(monkeypatch):
    n = FakeNet()
    monkeypatch.setattr(remote, "resolve", n.resolve)
    monkeypatch.setattr(remote, "connect", n.connect)
    return n


IMAGE = png(50, 40)


class Handler(http.server.BaseHTTPRequestHandler):
    """/cat.png: an image; /go?to=URL: a 302 to URL; /drip: an endless body, a byte at a time; /big: a declared
    body over the limit; /stream-big: an undeclared body over the limit; anything else: 404."""

    def do_GET(self):  # noqa: N802
        path, _, query = self.path.partition("?")
        if path == "/cat.png":
            self._reply(200, IMAGE)
        elif path == "/go":
            self.send_response(302)
            self.send_header("Location", urllib.parse.parse_qs(query)["to"][0])
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path == "/drip":
            self.send_response(200)
            self.end_headers()
            with contextlib.suppress(OSError):
                for _ in range(600):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.05)
        elif path == "/big":
            self.send_response(200)
            self.send_header("Content-Length", str(10**9))
            self.end_headers()
        elif path == "/stream-big":
            self.send_response(200)
            self.end_headers()
            with contextlib.suppress(OSError):
                self.wfile.write(b"x" * (srv_limits().max_body_bytes + 10))
        else:
            self._reply(404, b"")

    def _reply(self, status, data):
        self.send_response(status)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *a):
        pass


@pytest.fixture(scope="module")
def image_server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd.server_address[1]
    httpd.shutdown()


def srv_limits(**kw):
    return dataclasses.replace(srv.Limits(max_body_bytes=200_000, max_image_pixels=50_000, max_tokens=64,
                                          default_max_tokens=16, allow_remote_images=True, remote_timeout_s=5.0),
                               **kw)


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    model, proc = tiny_model(tmp_path_factory.mktemp("remote"), seed=1)
    e = srv.Engine(model, proc, "tiny-remote", generate_fn=forced_generate(proc))
    yield e
    e.close()


def ask(engine, url, **limits):
    with TestClient(srv.create_app(engine, srv_limits(**limits), webui=False)) as c:
        return c.post("/v1/chat/completions", json={"max_tokens": 20, "messages": [user("[refer] red circle", url)]})


@pytest.fixture
def public(net, image_server):
    """Two public-looking hosts, both served by the loopback image server."""
    net.names.update({"img.test": [PUBLIC_A], "img6.test": [PUBLIC_B], "evil.test": ["10.0.0.7"],
                      "mixed.test": [PUBLIC_A, "127.0.0.1"], "meta.test": ["169.254.169.254"]})
    net.routes.update({PUBLIC_A: image_server, PUBLIC_B: image_server})
    return net


# ---- the address rules -------------------------------------------------------------------------------------
REFUSED = [   # the forms named in issue #29, then the classic ones
    "::127.0.0.1", "::7f00:1", "::a9fe:a9fe", "::ffff:0:7f00:1", "::ffff:0:a9fe:a9fe", "64:ff9b:1::7f00:1",
    "fec0::1", "192.0.0.8",
    "::808:808",                              # IPv4-compatible, even of a public address
    "127.0.0.1", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0", "0.1.2.3",
    "192.0.2.1", "198.18.0.1", "198.51.100.2", "203.0.113.9", "224.0.0.1", "239.255.255.250", "240.0.0.1",
    "255.255.255.255", "192.88.99.1", "::", "::1", "fe80::1", "fe80::1%eth0", "fc00::1", "fd12:3456::1",
    "ff02::1", "100::1", "2001:db8::1", "3fff::1", "2001:2::1", "2001:20::1", "4000::1", "::ffff:127.0.0.1",
    "::ffff:10.0.0.1", "::ffff:169.254.169.254", "64:ff9b::127.0.0.1", "64:ff9b::a00:1", "64:ff9b::a9fe:a9fe",
    "64:ff9b:1::808:808", "2002:7f00:1::", "2002:a00:1::1", "2002:a9fe:a9fe::", "2002:c0a8:101::",
    "2001:0:4136:e378:8000:63bf:80ff:fffe",   # Teredo, client 127.0.0.1 (stored inverted)
    "2001:0:a00:1:8000:63bf:f7f7:f7f7",      # Teredo, server 10.0.0.1
    "2001:0:4136:e378:8000:63bf:f5ff:fffe",   # Teredo, client 10.0.0.1
    "::ffff:0:808:808",                       # IPv4-translated, even of a public address
]
ALLOWED = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700::1111", "2a00:1450:4001:80b::200e", "::ffff:8.8.8.8",
           "64:ff9b::808:808", "2002:808:808::1", "2001:0:4136:e378:8000:63bf:f7f7:f7f7"]   # Teredo, all public


@pytest.mark.parametrize("addr", REFUSED)
def test_non_public_addresses_are_refused(addr):
    assert remote.address_problem(addr) is not None and not remote.is_public_address(addr)


@pytest.mark.parametrize("addr", ALLOWED)
def test_public_addresses_are_allowed(addr):
    assert remote.address_problem(addr) is None and remote.is_public_address(addr)


def test_refusals_name_the_unwrapped_address():
    assert remote.address_problem("::ffff:127.0.0.1") == "IPv4-mapped form of 127.0.0.1, loopback 127.0.0.0/8"
    assert "6to4 form of 169.254.169.254, link-local" in remote.address_problem("2002:a9fe:a9fe::")
    assert "Teredo form of 127.0.0.1, loopback" in remote.address_problem("2001:0:4136:e378:8000:63bf:80ff:fffe")
    assert "IPv4-compatible" in remote.address_problem("::7f00:1") and "127.0.0.1" in remote.address_problem("::7f00:1")
    assert "local-use NAT64" in remote.address_problem("64:ff9b:1::7f00:1")
    assert "site-local" in remote.address_problem("fec0::1")
    assert "IETF protocol assignments" in remote.address_problem("192.0.0.8")
    assert not remote.is_public_address("not an address")


# ---- through the server ------------------------------------------------------------------------------------
def test_remote_images_are_off_by_default(engine, net):
    assert srv.Limits().allow_remote_images is False
    with TestClient(srv.create_app(engine, dataclasses.replace(srv_limits(), allow_remote_images=False),
                                   webui=False)) as c:
        r = c.post("/v1/chat/completions", json={"messages": [user("a", "http://img.test/cat.png")]})
    assert r.status_code == 400 and "--allow-remote-images" in r.json()["error"]["message"]
    assert net.resolved == [] and net.connected == []


PRIVATE_URLS = ["http://127.0.0.1:8000/x.png", "http://10.1.2.3/x.png", "https://192.168.0.7/x.png",
                "http://169.254.169.254/latest/meta-data", "http://[::1]/x.png", "http://[::ffff:127.0.0.1]/x.png",
                "http://localhost/x.png", "http://0.0.0.0/x.png", "http://100.64.0.1/x.png", "http://2130706433/",
                "http://0x7f.0.0.1/", "http://127.1/", "http://8.8.8.8@127.0.0.1/x.png", "HTTP://127.0.0.1/x.png",
                "http://evil.test/x.png", "http://mixed.test/x.png", "http://meta.test/",
                ] + [f"http://[{a}]/x.png" for a in REFUSED if ":" in a and "%" not in a] + \
               [f"http://{a}/x.png" for a in REFUSED if ":" not in a]


@pytest.mark.parametrize("url", PRIVATE_URLS)
def test_urls_to_non_public_addresses_are_refused_without_connecting(engine, public, url):
    r = ask(engine, url)
    err = r.json()["error"]
    assert r.status_code == 400 and err["code"] == "forbidden_address", r.text
    assert "not a public address" in err["message"]
    assert public.connected == []


@pytest.mark.parametrize("url,words", [
    ("http://[::1/x.png", "bad URL"), ("http://[127.0.0.1]/x.png", "bad URL"), ("http://[::1]:99999/", "bad URL"),
    ("http://img.test:port/", "bad URL"), ("http:///x.png", "no host"), ("https://", "no host"),
    ("http://no-such-host.test/x.png", "cannot resolve"), ("http://a\u0000b/", "cannot resolve"),
])
def test_unparseable_or_unresolvable_urls_get_a_400(engine, public, url, words):
    r = ask(engine, url)
    assert r.status_code == 400 and words in r.json()["error"]["message"], r.text
    assert public.connected == []


@pytest.mark.parametrize("host,addr", [("img.test", PUBLIC_A), ("img6.test", PUBLIC_B), (PUBLIC_A, PUBLIC_A),
                                       (f"[{PUBLIC_B}]", PUBLIC_B)])
def test_a_public_image_is_fetched_from_the_checked_address(engine, public, host, addr):
    r = ask(engine, f"http://{host}/cat.png")
    assert r.status_code == 200, r.text
    assert r.json()["boxes"][0]["box_pixels"] == [6.0, 16.0, 19.0, 28.4]         # of the 50x40 image served
    assert public.connected == [(addr, 80)]


def test_redirects_are_followed_and_each_one_is_checked(engine, public):
    go = "http://img.test/go?to="
    ok = ask(engine, go + urllib.parse.quote("http://img6.test/cat.png"))
    assert ok.status_code == 200 and public.connected == [(PUBLIC_A, 80), (PUBLIC_B, 80)], ok.text
    public.connected.clear()
    relative = ask(engine, go + urllib.parse.quote("/cat.png"))
    assert relative.status_code == 200 and public.connected == [(PUBLIC_A, 80)] * 2
    for target in ["http://evil.test/x.png", "http://127.0.0.1/", "http://[::ffff:a9fe:a9fe]/latest",
                   "http://[64:ff9b:1::7f00:1]/", "http://2130706433/", "http://mixed.test/cat.png"]:
        public.connected.clear()
        r = ask(engine, go + urllib.parse.quote(target))
        assert r.status_code == 400 and r.json()["error"]["code"] == "forbidden_address", (target, r.text)
        assert public.connected == [(PUBLIC_A, 80)], target          # never connected to the redirect's host
    for target, words in [("file:///etc/passwd", "only http(s)"), ("http://[::1/x", "bad URL"),
                          ("/go?to=/go%3Fto%3D/go%253Fto%253D/cat.png", "more than 3 redirects")]:
        r = ask(engine, go + urllib.parse.quote(target))
        assert r.status_code == 400 and words in r.json()["error"]["message"], (target, r.text)


def test_fetch_failures_get_a_4xx(engine, public):
    missing = ask(engine, "http://img.test/dog.png")
    assert missing.status_code == 400 and "HTTP 404" in missing.json()["error"]["message"]
    big = ask(engine, "http://img.test/big")
    assert big.status_code == 413 and big.json()["error"]["code"] == "image_too_large"
    undeclared = ask(engine, "http://img.test/stream-big")
    assert undeclared.status_code == 413 and undeclared.json()["error"]["code"] == "image_too_large"
    refused = ask(engine, "http://8.8.4.4/x.png")       # public, but nothing answers in the test network
    assert refused.status_code == 400 and "cannot connect" in refused.json()["error"]["message"]


def test_a_slow_remote_server_hits_the_deadline(engine, public):
    """/drip never ends (a byte every 50 ms, each well within a per-read timeout): the one deadline of the
    whole fetch cuts it."""
    r = ask(engine, "http://img.test/drip", remote_timeout_s=0.5)
    assert r.status_code == 400 and "took longer than 0.5 s" in r.json()["error"]["message"], r.text
