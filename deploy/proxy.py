"""The reverse proxy that publishes only the SuperLink's Fleet API to the hospitals.

Flower 1.42 serves the Fleet (``/v1/fleet/``), Control (``/v1/control/``) and Runtime
(``/v1/runtime/``) APIs of a SuperLink on one HTTP port, and cannot bind them apart. So the
SuperLink listens on the coordinator's loopback, and nginx listens on the address hospitals
reach: it serves the SuperLink's certificate (sites verify it against the consortium CA as
before), forwards ``/v1/fleet/`` to the SuperLink over TLS verified by the same CA, and
answers 403 to every other path. SuperNode authentication passes through unchanged: it is a
signature in request headers, checked by the SuperLink.
"""

from __future__ import annotations

from dataclasses import dataclass

from deploy.pki import Pki

FLEET_PATH = "/v1/fleet/"
UPSTREAM_NAME = "localhost"  # in every SuperLink certificate `fedumit pki` issues


@dataclass(frozen=True)
class FleetProxy:
    """Where nginx listens for hospitals and where the SuperLink listens on loopback."""

    pki: Pki
    listen: str  # host:port hospitals connect to
    superlink: str = "127.0.0.1:8000"  # the SuperLink's --host:--port


def nginx_server_block(proxy: FleetProxy) -> str:
    """An nginx ``server`` block (for ``/etc/nginx/conf.d/``) publishing the Fleet API only."""
    pki = proxy.pki
    for path in (pki.ca_cert, pki.server_cert, pki.server_key):
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: run `fedumit pki init` first")
    return f"""# FedUMIT: hospitals reach the SuperLink's Fleet API only; its Control and Runtime
# APIs answer on the coordinator's loopback ({proxy.superlink}) and nowhere else.
server {{
    listen {proxy.listen} ssl;
    ssl_certificate {pki.server_cert.resolve()};
    ssl_certificate_key {pki.server_key.resolve()};
    ssl_protocols TLSv1.2 TLSv1.3;

    client_max_body_size 0;        # model updates travel in Fleet requests
    proxy_request_buffering off;
    proxy_buffering off;
    proxy_read_timeout 3600s;
    proxy_send_timeout 3600s;

    location {FLEET_PATH} {{
        proxy_pass https://{proxy.superlink};
        proxy_http_version 1.1;
        proxy_ssl_trusted_certificate {pki.ca_cert.resolve()};
        proxy_ssl_verify on;
        proxy_ssl_name {UPSTREAM_NAME};
        proxy_ssl_server_name on;
    }}

    location / {{
        return 403;                # /v1/control/ (launching runs), /v1/runtime/, anything else
    }}
}}
"""
