"""Deployment commands: ``fedumit pki``, ``superlink``, ``supernode``, ``launch``, ``status``."""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from deploy.site_process import TASK_INPUT_SECONDS, positive_seconds

log = logging.getLogger(__name__)


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Register the deployment commands."""
    _add_pki(commands)
    link = commands.add_parser("superlink", help="start the coordinator's Flower SuperLink")
    link.add_argument("--pki", type=Path, help="PKI folder from `fedumit pki init`")
    link.add_argument("--database", type=Path, default=Path("superlink.db"), help="state file")
    link.add_argument(
        "--host",
        default="127.0.0.1",
        help="bind address (default 127.0.0.1: the Control API stays on this host; sites reach "
        "the Fleet API through the reverse proxy of `fedumit proxy-config`)",
    )
    link.add_argument(
        "--port", type=int, default=8000, help="Fleet/Control/Runtime API port (8000)"
    )
    _insecure_flag(link)
    link.set_defaults(handler=_superlink)

    node = commands.add_parser(
        "supernode", help="start a hospital's Flower SuperNode (runs approved app bundles only)"
    )
    node.add_argument("--site", type=Path, required=True, help="site config TOML")
    node.add_argument("--superlink", default="127.0.0.1:8000", help="SuperLink HOST:PORT")
    node.add_argument("--pki", type=Path, help="folder with ca.crt and sites/<site>.key")
    node.add_argument("--root-cert", type=Path, help="consortium CA certificate")
    node.add_argument("--auth-key", type=Path, help="this site's SuperNode private key")
    node.add_argument("--runtime-port", type=int, default=9094, help="local ClientApp API port")
    executor = node.add_mutually_exclusive_group()
    executor.add_argument(
        "--warm",
        dest="warm",
        action="store_true",
        default=True,
        help="the default: keep each approved app bundle's ClientApp loaded between messages "
        "(deploy.warm_executor)",
    )
    executor.add_argument(
        "--cold",
        dest="warm",
        action="store_false",
        help="a fresh ClientApp process per message (deploy.site_executor): no model kept in "
        "memory between messages, tens of seconds more per message",
    )
    node.add_argument(
        "--task-input-timeout",
        type=positive_seconds,
        default=TASK_INPUT_SECONDS,
        metavar="SECONDS",
        help="seconds a ClientApp task waits for its message to arrive before it is dropped "
        f"({TASK_INPUT_SECONDS:g}; raise it on a slow link)",
    )
    node.add_argument(
        "--init-ledger",
        action="store_true",
        help="first start only: create the site's privacy ledger and audit log if missing",
    )
    _insecure_flag(node)
    node.set_defaults(handler=_supernode)

    proxy = commands.add_parser(
        "proxy-config", help="nginx config publishing only the SuperLink's Fleet API to sites"
    )
    proxy.add_argument("--pki", type=Path, required=True, help="PKI folder (SuperLink cert)")
    proxy.add_argument(
        "--listen", required=True, help="HOST:PORT hospitals reach, e.g. 203.0.113.10:8000"
    )
    proxy.add_argument(
        "--superlink", default="127.0.0.1:8000", help="the SuperLink's loopback HOST:PORT"
    )
    proxy.set_defaults(handler=_proxy_config)

    launch = commands.add_parser("launch", help="start a FedUMIT run on a SuperLink (flwr run)")
    _connection_flags(launch)
    launch.add_argument("--app", type=Path, default=Path("."), help="FedUMIT project folder")
    launch.add_argument(
        "--run-config", action="append", default=[], help="'key=value ...' overrides"
    )
    launch.add_argument("--resume", type=Path, help="a run folder to continue")
    launch.add_argument("--stream", action="store_true", help="follow the run's logs")
    launch.add_argument(
        "--launch-id",
        type=_launch_id,
        help="this launch's id (letters, digits, - and _; default: a random one): a launch "
        "started again with the same id ends without training, so a script may retry it",
    )
    launch.set_defaults(handler=_launch)

    status = commands.add_parser("status", help="connected sites and the current run's round")
    _connection_flags(status)
    status.add_argument("--run-dir", type=Path, default=Path("runs"), help="where runs go")
    status.add_argument("--run", type=Path, help="a run folder (default: the newest)")
    status.set_defaults(handler=_status)


def _add_pki(commands: argparse._SubParsersAction) -> None:
    pki = commands.add_parser("pki", help="consortium CA, SuperLink certificate, site keys")
    sub = pki.add_subparsers(dest="pki_command", required=True, metavar="SUBCOMMAND")
    init = sub.add_parser("init", help="create the CA and the SuperLink's TLS certificate")
    init.add_argument("--out", type=Path, required=True, help="PKI folder")
    init.add_argument(
        "--superlink-host", required=True, help="SuperLink DNS names and IPs, comma-separated"
    )
    init.add_argument("--force", action="store_true", help="replace existing keys")
    init.set_defaults(handler=_pki_init)
    site = sub.add_parser("add-site", help="create a site's SuperNode authentication key pair")
    site.add_argument("name", help="site name (as in its site config)")
    site.add_argument("--out", type=Path, required=True, help="PKI folder")
    site.add_argument("--force", action="store_true", help="replace an existing key")
    site.set_defaults(handler=_pki_add_site)
    register = sub.add_parser("register", help="register a site's public key on the SuperLink")
    register.add_argument("name", help="site name")
    register.add_argument("--out", type=Path, required=True, help="PKI folder")
    _connection_flags(register)
    register.set_defaults(handler=_pki_register)
    rotate = sub.add_parser(
        "rotate-site", help="register a new key for a site and unregister its old one"
    )
    rotate.add_argument("name", help="site name")
    rotate.add_argument("--out", type=Path, required=True, help="PKI folder")
    rotate.add_argument(
        "--public-key", type=Path, help="the site's new public key (default: make a pair here)"
    )
    _connection_flags(rotate)
    rotate.set_defaults(handler=_pki_rotate_site)
    renew = sub.add_parser(
        "renew-superlink", help="a new SuperLink certificate from the existing CA"
    )
    renew.add_argument("--out", type=Path, required=True, help="PKI folder (with ca.key)")
    renew.add_argument(
        "--superlink-host", help="DNS names and IPs, comma-separated (default: the current ones)"
    )
    renew.set_defaults(handler=_pki_renew_superlink)


def _connection_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--federation", required=True, help="SuperLink connection name in Flower's config"
    )
    parser.add_argument("--superlink", help="HOST:PORT: (re)write the connection first")
    parser.add_argument("--root-cert", type=Path, help="CA certificate for --superlink")
    _insecure_flag(parser)


def _insecure_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--insecure", action="store_true", help="NO TLS, NO authentication (closed tests only)"
    )


Handler = Callable[[argparse.Namespace], int]


def _guarded(handler: Handler) -> Handler:
    """Report expected failures as one line and exit code 2."""

    def run(args: argparse.Namespace) -> int:
        from deploy.pki import PkiError

        try:
            return handler(args)
        except (PkiError, ValueError, FileNotFoundError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2

    return run


@_guarded
def _pki_init(args: argparse.Namespace) -> int:
    from deploy.pki import init_pki

    hosts = _hosts(args.superlink_host)
    pki = init_pki(args.out, hosts, force=args.force)
    print(f"CA {pki.ca_cert}\nSuperLink certificate {pki.server_cert} for {', '.join(hosts)}")
    return 0


@_guarded
def _pki_renew_superlink(args: argparse.Namespace) -> int:
    from cryptography import x509

    from deploy.pki import certificate_hosts, renew_superlink

    pki = renew_superlink(args.out, _hosts(args.superlink_host or ""))
    certificate = x509.load_pem_x509_certificate(pki.server_cert.read_bytes())
    print(
        f"SuperLink certificate {pki.server_cert} for {', '.join(certificate_hosts(certificate))}, "
        f"valid until {certificate.not_valid_after_utc:%Y-%m-%d}, from the CA sites hold; "
        "restart the SuperLink to serve it"
    )
    return 0


def _hosts(text: str) -> list[str]:
    return [h.strip() for h in text.split(",") if h.strip()]


@_guarded
def _pki_add_site(args: argparse.Namespace) -> int:
    from deploy.pki import add_site

    pki = add_site(args.out, args.name, force=args.force)
    print(f"private key {pki.site_key(args.name)} (stays at the site)")
    print(f"public key {pki.site_public_key(args.name)} (send to the coordinator)")
    return 0


@_guarded
def _pki_register(args: argparse.Namespace) -> int:
    from deploy.pki import Pki
    from deploy.registry import register_site

    _connect(args)
    node = register_site(Pki(args.out), args.name, args.federation)
    print(f"{args.name} registered as SuperNode {node}")
    return 0


@_guarded
def _pki_rotate_site(args: argparse.Namespace) -> int:
    from deploy.pki import Pki
    from deploy.registry import rotate_site

    _connect(args)
    pki = Pki(args.out)
    rotation = rotate_site(pki, args.name, args.federation, args.public_key)
    print(
        f"{args.name}: new key registered as SuperNode {rotation.new_node}; "
        f"SuperNode {rotation.old_node} (the old key) unregistered"
    )
    if args.public_key is None:
        print(
            f"new private key {pki.site_key(args.name)}: install it at the site and restart "
            "its SuperNode"
        )
    return 0


@_guarded
def _superlink(args: argparse.Namespace) -> int:
    from deploy.exposure import CONTROL_API_EXPOSED, is_reachable_from_elsewhere
    from deploy.flower import exec_flower, warn_insecure
    from deploy.nodes import SuperLinkOptions, superlink_command
    from deploy.pki import Pki

    if args.insecure:
        warn_insecure()
    if is_reachable_from_elsewhere(args.host):
        print(CONTROL_API_EXPOSED.format(host=args.host), file=sys.stderr, flush=True)
    options = SuperLinkOptions(
        pki=Pki(args.pki) if args.pki else None,
        database=args.database.resolve(),
        host=args.host,
        port=args.port,
        insecure=args.insecure,
    )
    exec_flower(superlink_command(options))


@_guarded
def _supernode(args: argparse.Namespace) -> int:
    from client.config import load_site_config
    from deploy.flower import exec_flower, flower_env, warn_insecure
    from deploy.nodes import SuperNodeOptions, runtime_api_address, supernode_command
    from deploy.pki import Pki
    from deploy.site_process import executor_command

    if args.insecure:
        warn_insecure()
    if args.init_ledger:
        from client.records import initialize_site_records

        for path in initialize_site_records(load_site_config(args.site)):
            print(f"created {path}")
    root_cert, auth_key = args.root_cert, args.auth_key
    if args.pki is not None:
        pki = Pki(args.pki)
        root_cert = root_cert or pki.ca_cert
        auth_key = auth_key or pki.site_key(load_site_config(args.site).name)
    options = SuperNodeOptions(
        site_config=args.site,
        superlink=args.superlink,
        root_cert=root_cert,
        auth_key=auth_key,
        runtime_port=args.runtime_port,
        insecure=args.insecure,
    )
    argv = supernode_command(options)
    site = load_site_config(args.site)
    # The executor watches this process id, which flower-supernode keeps after exec.
    executor = executor_command(
        args.warm, runtime_api_address(options), site.work_dir, site.audit_path,
        parent=os.getpid(), input_timeout=args.task_input_timeout,
    )  # fmt: skip
    subprocess.Popen(executor, env=flower_env())
    exec_flower(argv)


@_guarded
def _proxy_config(args: argparse.Namespace) -> int:
    from deploy.exposure import is_reachable_from_elsewhere
    from deploy.pki import Pki
    from deploy.proxy import FleetProxy, nginx_server_block

    if is_reachable_from_elsewhere(args.superlink.rpartition(":")[0]):
        raise ValueError(f"--superlink {args.superlink}: the SuperLink must listen on loopback")
    print(nginx_server_block(FleetProxy(Pki(args.pki), args.listen, args.superlink)), end="")
    return 0


def _launch_id(value: str) -> str:
    from server.launch_claim import checked_launch_id

    try:
        return checked_launch_id(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


@_guarded
def _launch(args: argparse.Namespace) -> int:
    from deploy.coordinator import launch_args
    from deploy.flower import run_flwr

    _connect(args)
    return run_flwr(
        launch_args(
            args.app, args.federation, args.run_config, args.resume, args.stream, args.launch_id
        )
    ).returncode


@_guarded
def _status(args: argparse.Namespace) -> int:
    from deploy.coordinator import latest_run, run_progress, site_rows
    from deploy.flower import run_flwr

    _connect(args)
    nodes = run_flwr(["supernode", "list", args.federation, "--format", "json"], capture=True)
    rows = site_rows(nodes.stdout)
    print(f"{sum(r['status'] == 'online' for r in rows)} of {len(rows)} sites online")
    for row in rows:
        print(f"  node {row['node-id']}: {row['status']} (online since {row['online-at']})")
    run = args.run or latest_run(args.run_dir)
    print(run_progress(run).describe() if run else f"no run folder under {args.run_dir}")
    _warn_exposed_control_api(args.federation)
    return 0


def _warn_exposed_control_api(federation: str) -> None:
    """Warn when the SuperLink's Control API answers on an address other hosts can reach."""
    from deploy.connection import connection_address
    from deploy.exposure import exposed_control_api

    address, insecure = connection_address(federation)
    for exposed in exposed_control_api(address, secure=not insecure):
        print(
            f"WARNING: the SuperLink's Control API answers on {exposed}, not only on loopback: "
            "whoever reaches it can launch runs (open-source Flower does not authenticate it). "
            "Bind the SuperLink to 127.0.0.1 and publish only the Fleet API through the "
            "reverse proxy (fedumit proxy-config)."
        )


def _connect(args: argparse.Namespace) -> None:
    """Write the SuperLink connection when ``--superlink`` is given."""
    if args.superlink is None:
        return
    from deploy.connection import save_connection

    if args.insecure:
        from deploy.flower import warn_insecure

        warn_insecure()
    root_cert = args.root_cert
    if root_cert is None and getattr(args, "out", None) is not None:
        root_cert = args.out / "ca.crt"
    path = save_connection(args.federation, args.superlink, root_cert, insecure=args.insecure)
    log.info("SuperLink connection %r -> %s written to %s", args.federation, args.superlink, path)
