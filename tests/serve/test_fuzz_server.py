"""Property-based (hypothesis) fuzzing of the server beyond its JSON handling (tests/test_fuzz_requests.py §1):
sampling settings with the real model, the address rules for remote images, and remote image URLs in every host
notation.

Derandomized like tests/test_fuzz_requests.py. Each test compares with an oracle written here from the specification
(SECURITY.md §7), and asserts that both outcomes occurred, so that a server refusing everything fails. No test
touches DNS or the network: remote fetches go through test_remote.FakeNet to a loopback image server.
"""
import contextlib
import dataclasses
import functools
import ipaddress
import json
import math
from collections import Counter

import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st
from transformers import LogitsProcessorList

from helpers import tiny_model
from minigptv2 import generate
from minigptv2.serve import remote
from minigptv2.serve import server as srv
from fuzz_helpers import EDGE_NUMBERS, JSON, fuzz_settings, instant_generate
from test_remote import FakeNet, image_server  # noqa: F401 - image_server is a fixture
from test_server import ScaleLogits

OUTCOMES: Counter = Counter()          # (test, outcome) -> cases


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("fuzz-server"), seed=1)


# ---- 1. sampling settings, with the real model -------------------------------------------------------------
MAX_TOKENS = 4
SAMPLING_LIMITS = srv.Limits(max_body_bytes=100_000, max_image_pixels=50_000, max_tokens=MAX_TOKENS,
                             default_max_tokens=2)


def _in(v, lo, hi, lo_open=False) -> bool:
    if v is None:
        return True
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and not math.isfinite(v)):
        return False
    return lo <= v <= hi and not (lo_open and v == lo)


def refused_params(body) -> set:
    """The specification: which of these parameters the server must refuse (empty: it must answer)."""
    bad = set()
    t = body.get("temperature")
    if not _in(t, 0, 2) or (t is not None and 0 < t < srv.MIN_TEMPERATURE):
        bad.add("temperature")
    if not _in(body.get("top_p"), 0, 1, lo_open=True):
        bad.add("top_p")
    key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    n = body.get(key)
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_TOKENS):
        bad.add(key)
    if body.get("stream") is not None and not isinstance(body["stream"], bool):
        bad.add("stream")
    return bad


def number(lo, hi):
    return (st.none() | st.floats(lo, hi) | st.sampled_from(EDGE_NUMBERS) | st.integers(-3, 3)
            | st.floats(allow_nan=True, allow_infinity=True) | st.integers() | JSON)


MESSAGES = st.just([{"role": "user", "content": "[vqa] what color is it?"}])
SAMPLING = st.fixed_dictionaries(         # anything
    {"messages": MESSAGES},
    optional={"temperature": number(0, 2) | st.floats(0, 1e-4), "top_p": number(0, 1),
              "max_tokens": st.integers(0, MAX_TOKENS + 1) | number(0, MAX_TOKENS),
              "max_completion_tokens": st.none() | st.integers(1, MAX_TOKENS) | number(0, MAX_TOKENS),
              "stream": st.booleans() | st.none() | JSON}) | st.fixed_dictionaries(   # valid, extremes included
    {"messages": MESSAGES},
    optional={"temperature": st.sampled_from([0, -0.0, srv.MIN_TEMPERATURE, 2]) | st.floats(srv.MIN_TEMPERATURE, 2),
              "top_p": st.sampled_from([5e-324, 1e-300, 1]) | st.floats(0, 1, exclude_min=True),
              "max_tokens": st.integers(1, MAX_TOKENS), "stream": st.booleans()})


@pytest.fixture(scope="module")
def sampling(tiny):
    """The real `generate` (no forcing) behind the real engine; `scale` multiplies the logits before sampling."""
    model, proc = tiny
    scale = ScaleLogits(1.0)
    engine = srv.Engine(model, proc, "tiny", batch_wait_ms=0,
                        generate_fn=functools.partial(generate, logits_processor=LogitsProcessorList([scale])))
    try:
        with TestClient(srv.create_app(engine, SAMPLING_LIMITS, webui=False), raise_server_exceptions=False) as c:
            yield c, scale
    finally:
        engine.close()


@given(body=SAMPLING, scale=st.sampled_from([1.0, 1e4, 1e30]))
def _sampling_case(sampling, body, scale):
    client, scaler = sampling
    scaler.scale = scale
    r = client.post("/v1/chat/completions", content=json.dumps(body).encode(),
                    headers={"content-type": "application/json"})
    bad = refused_params(body)
    if not bad:
        assert r.status_code == 200, (r.status_code, r.text[:300], body)
        if body.get("stream"):
            lines = [ln for ln in r.text.splitlines() if ln]
            assert lines[-1] == "data: [DONE]" and all(ln.startswith("data: {") for ln in lines[:-1])
            chunks = [json.loads(ln[6:]) for ln in lines[:-1]]
            assert not any("error" in c for c in chunks), r.text[:300]
            assert [c["choices"][0]["finish_reason"] for c in chunks][-1] in ("stop", "length")
        else:
            reply = r.json()
            assert isinstance(reply["choices"][0]["message"]["content"], str)
            assert reply["choices"][0]["finish_reason"] in ("stop", "length")
            limit = body.get("max_completion_tokens") or body.get("max_tokens") or SAMPLING_LIMITS.default_max_tokens
            assert 1 <= reply["usage"]["completion_tokens"] <= limit
        OUTCOMES["sampling", "answered"] += 1
    else:
        assert r.status_code == 400, (r.status_code, r.text[:300], body)
        err = r.json()["error"]
        assert err["type"] == "invalid_request_error" and err["param"] in bad, (err, bad)
        OUTCOMES["sampling", "refused"] += 1


@pytest.mark.fuzz
def test_sampling_settings_with_the_real_model_get_an_answer_or_a_400(sampling):
    """Every temperature / top_p / max_tokens / stream value (tiny, subnormal, huge, non-finite, wrong type),
    with logits up to 1e30 times larger than the model's: answered exactly when the specification allows it."""
    fuzz_settings(250)(_sampling_case)(sampling)
    assert OUTCOMES["sampling", "answered"] >= 60 and OUTCOMES["sampling", "refused"] >= 60, OUTCOMES


# ---- 2. the address rules ----------------------------------------------------------------------------------
# special-purpose blocks that Python's `is_global` does not refuse on every supported Python version
NOT_GLOBAL_V4 = [ipaddress.ip_network(n) for n in ("192.0.0.0/24", "192.31.196.0/24", "192.52.193.0/24",
                                                   "192.88.99.0/24", "192.175.48.0/24")]
NOT_GLOBAL_V6 = [ipaddress.ip_network(n) for n in ("2001::/23", "3fff::/20", "2620:4f:8000::/48")]
NAT64, LOCAL_NAT64 = ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48")
NEVER_ROUTED = [ipaddress.ip_network(n) for n in ("::/96", "::ffff:0:0:0/96")] + [LOCAL_NAT64]


def v4_public(a: ipaddress.IPv4Address) -> bool:
    return a.is_global and not a.is_multicast and not any(a in n for n in NOT_GLOBAL_V4)


def oracle_public(text: str) -> bool:
    """The specification, from Python's own tables plus the few blocks they miss."""
    if "%" in text:
        return False
    ip = ipaddress.ip_address(text)
    if ip.version == 4:
        return v4_public(ip)
    if ip.ipv4_mapped:
        return v4_public(ip.ipv4_mapped)
    if ip in NAT64:
        return v4_public(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    if ip.sixtofour:
        return v4_public(ip.sixtofour)
    if ip.teredo:
        return all(v4_public(a) for a in ip.teredo)
    if any(ip in n for n in NEVER_ROUTED):
        return False
    return (ip in ipaddress.ip_network("2000::/3") and ip.is_global and not ip.is_multicast
            and not any(ip in n for n in NOT_GLOBAL_V6))


SPECIAL_V4 = [n for n, _ in remote.IPV4_REFUSED] + [ipaddress.ip_network(n) for n in ("8.8.8.0/24", "1.0.0.0/8")]
V4 = st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address) | st.sampled_from(SPECIAL_V4).flatmap(
    lambda n: st.integers(int(n.network_address), int(n.broadcast_address)).map(ipaddress.IPv4Address))
PUBLIC_V4 = st.sampled_from([ipaddress.ip_network(n) for n in ("8.8.8.0/24", "1.0.0.0/8", "93.184.0.0/16")]).flatmap(
    lambda n: st.integers(int(n.network_address), int(n.broadcast_address)).map(ipaddress.IPv4Address))
SPECIAL_V6 = [n for n, *_ in remote.IPV6_NAMED + remote.IPV6_EMBEDDING + remote.IPV6_REFUSED] + [
    ipaddress.ip_network(n) for n in ("2000::/3", "2606:4700::/32", "::/0", "fec0::/10", "2001::/16")]
V6 = st.sampled_from(SPECIAL_V6).flatmap(
    lambda n: st.integers(int(n.network_address), int(n.broadcast_address)).map(ipaddress.IPv6Address))


def embeddings(a: ipaddress.IPv4Address, b: ipaddress.IPv4Address) -> dict:
    """Every IPv6 form of IPv4 `a` (Teredo: server `b`, client `a`) -> its text, in several notations."""
    n, m = int(a), int(b)
    forms = {"mapped": (0xFFFF << 32) | n, "nat64": int(NAT64.network_address) | n,
             "6to4": (0x2002 << 112) | (n << 80) | 1, "teredo": (0x20010000 << 96) | (m << 64) | (n ^ 0xFFFFFFFF),
             "compatible": n, "translated": (0xFFFF << 48) | n, "local-nat64": int(LOCAL_NAT64.network_address) | n}
    return {k: ipaddress.IPv6Address(v) for k, v in forms.items()}


@given(a=PUBLIC_V4 | V4, b=PUBLIC_V4 | V4, v6=V6)
def _address_case(a, b, v6):
    OUTCOMES["address", "public" if v4_public(a) else "refused"] += 1
    assert remote.is_public_address(str(a)) is v4_public(a), a
    for form, ip in embeddings(a, b).items():
        want = {"teredo": v4_public(a) and v4_public(b), "compatible": False, "translated": False,
                "local-nat64": False}.get(form, v4_public(a))
        if form == "compatible" and int(a) <= 1:
            want = False                                  # :: and ::1 themselves
        for text in {ip.compressed, ip.exploded, ip.compressed.upper()}:
            assert remote.is_public_address(text) is want is oracle_public(text), (form, text, a, b)
    assert remote.is_public_address(str(v6)) is oracle_public(str(v6)), v6
    OUTCOMES["address", "public v6" if oracle_public(str(v6)) else "refused v6"] += 1


@pytest.mark.fuzz
def test_addresses_and_every_ipv6_form_carrying_them_get_the_specified_verdict():
    fuzz_settings(1500)(_address_case)()
    assert min(OUTCOMES["address", k] for k in ("public", "refused", "public v6", "refused v6")) >= 100, OUTCOMES


# ---- 3. remote image URLs in every host notation, through the server -------------------------------------------
def host_forms(a: ipaddress.IPv4Address, b: ipaddress.IPv4Address) -> list[str]:
    """URL hosts that a resolver turns into `a` (or an IPv6 form of it)."""
    o = a.packed
    forms = [str(a), str(int(a)), hex(int(a)), ".".join(f"0{x:o}" for x in o), f"{o[0]}.{int.from_bytes(o[1:], 'big')}",
             f"{o[0]}.{o[1]}.{int.from_bytes(o[2:], 'big')}"]
    return forms + [f"[{ip}]" for ip in embeddings(a, b).values()] + ["[::ffff:%s]" % a]


@pytest.fixture(scope="module")
def remote_client(tiny, image_server):  # noqa: F811 - the fixture imported above
    model, processor = tiny
    engine = srv.Engine(model, processor, "tiny-fuzz", generate_fn=instant_generate, batch_wait_ms=0)
    limits = dataclasses.replace(SAMPLING_LIMITS, allow_remote_images=True, max_tokens=64)
    try:
        with TestClient(srv.create_app(engine, limits, webui=False), raise_server_exceptions=False) as c:
            yield c, image_server
    finally:
        engine.close()


@contextlib.contextmanager
def fake_net(port: int):
    """Every address routes to the loopback image server (so only the address check decides)."""
    net = FakeNet()
    net.default_route = port
    saved = remote.resolve, remote.connect
    remote.resolve, remote.connect = net.resolve, net.connect
    try:
        yield net
    finally:
        remote.resolve, remote.connect = saved


@given(a=PUBLIC_V4 | V4, b=PUBLIC_V4 | V4, pick=st.integers(0, 100), named=st.booleans(), extra=PUBLIC_V4 | V4)
def _url_case(remote_client, a, b, pick, named, extra):
    client, port = remote_client
    forms = host_forms(a, b)
    host = forms[pick % len(forms)]
    with fake_net(port) as net:
        if named:          # a name with two addresses: both must be public
            net.names["img.test"] = [str(a), str(extra)]
            host = "img.test"
        addrs = net.resolve(host.strip("[]"), 80)
        net.resolved.clear()
        r = client.post("/v1/chat/completions", json={"max_tokens": 20, "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": f"http://{host}/cat.png"}}, {"type": "text", "text": "hi"}]}]})
    if all(oracle_public(x) for x in addrs):
        assert r.status_code == 200 and r.json()["boxes"][0]["box_pixels"] == [6.0, 16.0, 19.0, 28.4], (host, r.text)
        OUTCOMES["url", "fetched"] += 1
    else:
        assert r.status_code == 400 and r.json()["error"]["code"] == "forbidden_address", (host, addrs, r.text)
        OUTCOMES["url", "refused"] += 1
    assert all(oracle_public(x) for x, _ in net.connected), net.connected    # never a connection elsewhere


@pytest.mark.fuzz
def test_remote_urls_in_every_host_notation_are_fetched_only_from_public_addresses(remote_client):
    fuzz_settings(400)(_url_case)(remote_client)
    assert OUTCOMES["url", "fetched"] >= 50 and OUTCOMES["url", "refused"] >= 50, OUTCOMES
