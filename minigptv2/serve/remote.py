"""Remote images for the server (`minigptv2 serve --allow-remote-images`): which addresses may be connected to,
and the fetch itself. SECURITY.md §7 states the guarantees; tests/serve/test_server.py and
tests/test_fuzz_requests.py check them.

* Only http(s) URLs. Redirects are followed up to MAX_REDIRECTS times, each new URL checked like the first.
* Every address the host resolves to must be public (`address_problem(addr) is None`): IPv4 outside every IANA
  special-purpose block (private, loopback, link-local, CGNAT, documentation, benchmarking, multicast, reserved,
  ...); IPv6 in global unicast 2000::/3 outside the special-purpose blocks there. An IPv6 address that embeds an
  IPv4 address is unwrapped first: IPv4-mapped, NAT64 64:ff9b::/96, 6to4 and Teredo (server and client) are
  judged by the IPv4 addresses they carry; IPv4-compatible, IPv4-translated and local-use NAT64 64:ff9b:1::/48
  are never routed globally and are refused whatever they carry. Zone-scoped addresses (fe80::1%eth0) are refused.
* The connection goes to a checked address (no second DNS lookup that could rebind the name).
* The body is capped at `max_bytes`; the whole fetch, redirects included, has one deadline.

`resolve` and `connect` are module attributes so that tests can stub DNS and the network.
"""
from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import threading
import time
import urllib.parse

MAX_REDIRECTS = 3
REDIRECT_STATUSES = {301, 302, 303, 307, 308}


class FetchError(Exception):
    """A remote image we refuse or cannot get: `status` is the HTTP status the server answers with."""

    def __init__(self, message: str, status: int = 400, code: str | None = None):
        super().__init__(message)
        self.status, self.code = status, code


# ---- which addresses are public ------------------------------------------------------------------------------
def _nets(table):
    return [(ipaddress.ip_network(n), why) for n, why in table]


# the IANA IPv4 special-purpose address registry, multicast and the reserved block: none is fetched from
IPV4_REFUSED = _nets([
    ("0.0.0.0/8", "'this network'"), ("10.0.0.0/8", "private"), ("100.64.0.0/10", "shared address space (CGNAT)"),
    ("127.0.0.0/8", "loopback"), ("169.254.0.0/16", "link-local"), ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "IETF protocol assignments"), ("192.0.2.0/24", "documentation"), ("192.31.196.0/24", "AS112"),
    ("192.52.193.0/24", "AMT"), ("192.88.99.0/24", "6to4 relay anycast"), ("192.168.0.0/16", "private"),
    ("192.175.48.0/24", "AS112"), ("198.18.0.0/15", "benchmarking"), ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"), ("224.0.0.0/4", "multicast"), ("240.0.0.0/4", "reserved / broadcast"),
])
IPV6_GLOBAL_UNICAST = ipaddress.ip_network("2000::/3")
# checked in order, before the embedded-IPv4 forms below
IPV6_NAMED = _nets([("::/128", "unspecified"), ("::1/128", "loopback")])
# IPv6 forms that carry an IPv4 address: (network, name, routable). A routable form is judged by its IPv4
# address(es); the others are refused whatever they carry.
IPV6_EMBEDDING = [(ipaddress.ip_network(n), name, routable) for n, name, routable in [
    ("::ffff:0:0/96", "IPv4-mapped", True), ("64:ff9b::/96", "NAT64", True), ("2002::/16", "6to4", True),
    ("2001::/32", "Teredo", True), ("::/96", "IPv4-compatible (deprecated)", False),
    ("::ffff:0:0:0/96", "IPv4-translated", False), ("64:ff9b:1::/48", "local-use NAT64", False)]]
# the IANA IPv6 special-purpose registry (what is not already above), and other non-global blocks
IPV6_REFUSED = _nets([
    ("100::/64", "discard-only"), ("fc00::/7", "unique local"), ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local (deprecated)"), ("ff00::/8", "multicast"), ("2001:db8::/32", "documentation"),
    ("3fff::/20", "documentation"), ("2001::/23", "IETF protocol assignments"), ("2620:4f:8000::/48", "AS112"),
])


def _embedded_ipv4(ip: ipaddress.IPv6Address, net) -> list[ipaddress.IPv4Address]:
    if ip.ipv4_mapped is not None:
        return [ip.ipv4_mapped]
    if ip.sixtofour is not None:
        return [ip.sixtofour]
    if ip.teredo is not None:
        return list(ip.teredo)              # (server, client), the client de-obfuscated
    if net.prefixlen == 96:                 # NAT64 / compatible / translated: the last 32 bits
        return [ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)]
    return []                               # local-use NAT64: where the IPv4 sits depends on the prefix length


def _ipv4_problem(ip: ipaddress.IPv4Address) -> str | None:
    for net, why in IPV4_REFUSED:
        if ip in net:
            return f"{why} {net}"
    return None


def address_problem(addr: str) -> str | None:
    """None when `addr` (an IP address as text) is public and may be connected to; else why not.
    Raises ValueError for text that is not an IP address."""
    if "%" in addr:
        return "a zone-scoped address"
    ip = ipaddress.ip_address(addr)
    if ip.version == 4:
        return _ipv4_problem(ip)
    for net, why in IPV6_NAMED:
        if ip in net:
            return why
    for net, name, routable in IPV6_EMBEDDING:
        if ip in net:
            v4 = _embedded_ipv4(ip, net)
            carried = f" of {', '.join(map(str, v4))}" if v4 else ""
            if not routable:
                return f"{name}{carried} ({net}), not globally routable"
            for a in v4:
                if (why := _ipv4_problem(a)) is not None:
                    return f"{name} form of {a}, {why}"
            return None
    for net, why in IPV6_REFUSED:
        if ip in net:
            return f"{why} {net}"
    if ip not in IPV6_GLOBAL_UNICAST:
        return f"outside IPv6 global unicast {IPV6_GLOBAL_UNICAST}"
    return None


def is_public_address(addr: str) -> bool:
    """True for a public (global unicast) address; see `address_problem`."""
    try:
        return address_problem(addr) is None
    except ValueError:
        return False


# ---- the fetch ---------------------------------------------------------------------------------------------
def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (the system resolver's order, without repeats)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


def connect(addr: str, port: int, timeout: float) -> socket.socket:
    return socket.create_connection((addr, port), timeout=timeout)


def _short(url: str) -> str:
    return url if len(url) <= 100 else url[:97] + "..."


def parse_url(url: str) -> tuple[urllib.parse.SplitResult, str, int]:
    """-> (parts, host, port) of an http(s) URL, or FetchError naming the problem."""
    try:
        u = urllib.parse.urlsplit(url)
        host, port = u.hostname, u.port
    except ValueError as e:     # "http://[::1/x", "http://[127.0.0.1]/", "http://h:99999/"
        raise FetchError(f"bad URL {_short(url)!r} ({e})") from None
    scheme = u.scheme.lower()
    if scheme not in ("http", "https"):
        raise FetchError(f"only http(s) URLs are fetched, not {_short(url)!r}")
    if not host:
        raise FetchError(f"the URL {_short(url)!r} has no host")
    return u, host, port if port is not None else (443 if scheme == "https" else 80)


def checked_addresses(host: str, port: int) -> list[str]:
    """The addresses of `host`, each one public; else FetchError (code `forbidden_address` for a non-public one)."""
    try:
        addrs = resolve(host, port)
    except (OSError, UnicodeError, ValueError) as e:
        raise FetchError(f"cannot resolve host {host!r} ({e})") from None
    if not addrs:
        raise FetchError(f"cannot resolve host {host!r} (no addresses)")
    for a in addrs:
        try:
            why = address_problem(a)
        except ValueError:
            why = "not an IP address"
        if why is not None:
            raise FetchError(f"host {host!r} resolves to {a} ({why}), not a public address; refused",
                             code="forbidden_address")
    return addrs


def fetch(url: str, max_bytes: int, timeout: float, max_redirects: int = MAX_REDIRECTS) -> bytes:
    """GET an image over http(s) under the rules above; the whole fetch ends within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    for _ in range(max_redirects + 1):
        u, host, port = parse_url(url)
        addrs = checked_addresses(host, port)
        status, location, data = _get(u, host, port, addrs, max_bytes, deadline, timeout)
        if status == 200:
            return data
        if status in REDIRECT_STATUSES and location:
            try:
                url = urllib.parse.urljoin(url, location)
            except ValueError as e:
                raise FetchError(f"{_short(url)} redirects to a bad URL {_short(location)!r} ({e})") from None
            continue
        raise FetchError(f"fetching {_short(url)} gave HTTP {status}")
    raise FetchError(f"fetching the image took more than {max_redirects} redirects (last: {_short(url)})")


def _get(u, host, port, addrs, max_bytes, deadline, timeout) -> tuple[int, str | None, bytes]:
    """One GET to the first checked address that accepts the connection -> (status, Location, body)."""
    sock, err = None, None
    for a in addrs:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            sock = connect(a, port, left)
            break
        except OSError as e:
            err = e
    if sock is None:
        raise FetchError(f"cannot connect to {host!r} port {port}: {err or 'timed out'}")
    expired = threading.Event()

    def cut():                  # the deadline: a recv that is still waiting returns at once
        expired.set()
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    timer = threading.Timer(max(0.0, deadline - time.monotonic()), cut)
    timer.daemon = True
    timer.start()
    try:
        if u.scheme.lower() == "https":
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
            conn = http.client.HTTPSConnection(host, port, timeout=timeout)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=timeout)
        conn.sock = sock     # http.client uses the given socket instead of connecting by name
        try:
            path = (u.path or "/") + (f"?{u.query}" if u.query else "")
            conn.request("GET", path, headers={"User-Agent": "minigptv2-server", "Accept": "image/*"})
            resp = conn.getresponse()
            if resp.status != 200:
                return resp.status, resp.getheader("Location"), b""
            declared = resp.getheader("Content-Length", "")
            if declared.isdigit() and int(declared) > max_bytes:
                raise FetchError(f"the remote image is {declared} bytes, over the limit of {max_bytes}", 413,
                                 "image_too_large")
            data = bytearray()
            while len(data) <= max_bytes and (chunk := resp.read1(65536)):
                data += chunk
        finally:
            conn.close()
    except (OSError, http.client.HTTPException, ValueError) as e:
        if expired.is_set():
            raise FetchError(f"fetching {_short(u.geturl())} took longer than {timeout:g} s") from None
        raise FetchError(f"cannot fetch {_short(u.geturl())}: {type(e).__name__}: {e}") from None
    finally:
        timer.cancel()
        sock.close()
    if expired.is_set():
        raise FetchError(f"fetching {_short(u.geturl())} took longer than {timeout:g} s")
    if len(data) > max_bytes:
        raise FetchError(f"the remote image is over {max_bytes} bytes", 413, "image_too_large")
    return 200, None, bytes(data)
