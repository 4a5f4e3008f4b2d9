"""Whether the SuperLink's Control API answers on an address other hosts can reach.

Open-source Flower 1.42 serves the Fleet, Control and Runtime APIs of a SuperLink on one HTTP
port and does not authenticate the Control API: whoever reaches ``/v1/control/`` can start a
run, which runs its app bundle's code on the coordinator and at every site that approved it.
The Control API must answer on loopback only (``fedumit superlink --host 127.0.0.1``), with the
Fleet API published through a reverse proxy (:mod:`deploy.proxy`).

The probe sends an empty ``list-nodes`` request to each of this host's non-loopback addresses
(and the connection's host) on the SuperLink's port. It reveals nothing (no key, no token) and
does not verify the certificate, since the certificate need not name these addresses: it asks
whether something answers there, which a reverse proxy that publishes the Fleet path only
refuses with 403.
"""

from __future__ import annotations

import ipaddress
import re
import ssl
import urllib.error
import urllib.request
from pathlib import Path

CONTROL_PROBE_PATH = "/v1/control/list-nodes"
PROBE_SECONDS = 3.0
REFUSED_STATUSES = (403, 404)  # a proxy that keeps the Control API in
CONTROL_API_EXPOSED = (
    "WARNING: binding the SuperLink to {host} serves its Control API there too: whoever "
    "reaches it can launch runs (open-source Flower does not authenticate the Control API). "
    "Bind it to 127.0.0.1 and publish the Fleet API through `fedumit proxy-config`."
)


def local_addresses() -> list[str]:
    """This host's non-loopback IP addresses (Linux's /proc; empty where it is not)."""
    found: list[str] = []
    trie = Path("/proc/net/fib_trie")
    if trie.is_file():
        found += re.findall(r"\|-- (\S+)\n\s+/32 host LOCAL", trie.read_text())
    inet6 = Path("/proc/net/if_inet6")
    if inet6.is_file():
        for line in inet6.read_text().splitlines():
            digits = line.split()[0]
            found.append(str(ipaddress.IPv6Address(int(digits, 16))))
    return sorted({a for a in found if is_reachable_from_elsewhere(a)})


def is_reachable_from_elsewhere(host: str) -> bool:
    """Whether ``host`` is an address (or name) other machines may reach: not loopback,
    not IPv6 link-local."""
    if host == "localhost":
        return False
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return True  # a DNS name: assume it is published
    return not (address.is_loopback or address.is_link_local)


def control_api_answers(host: str, port: int, secure: bool = True) -> bool:
    """Whether a Control API request to ``host:port`` gets an answer other than a refusal."""
    literal = f"[{host}]" if ":" in host else host
    url = f"{'https' if secure else 'http'}://{literal}:{port}{CONTROL_PROBE_PATH}"
    request = urllib.request.Request(url, data=b"", method="POST")
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    try:
        with urllib.request.urlopen(request, timeout=PROBE_SECONDS, context=context):
            return True
    except urllib.error.HTTPError as error:
        return error.code not in REFUSED_STATUSES
    except (OSError, ValueError):
        return False


def exposed_control_api(superlink: str, secure: bool = True) -> list[str]:
    """``host:port`` addresses, other than loopback, where the Control API of the SuperLink
    at ``superlink`` (``host:port``) answers."""
    host, _, port = superlink.rpartition(":")
    host = host.strip("[]")
    candidates = set(local_addresses())
    if is_reachable_from_elsewhere(host):
        candidates.add(host)
    return sorted(f"{h}:{port}" for h in candidates if control_api_answers(h, int(port), secure))
