"""keadm: join nodes as KubeEdge users do — ``init``, ``gettoken``, ``join``, ``reset``.

Available as ``kubeedge keadm ...`` (added through ``kubeedge_cli_commands``) and as the ``keadm``
command. Every command takes ``--data-dir DIR``. Steps are printed as they run; a failure names the step
and the reason and exits with status 2.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

CLOUD_MODULES = (
    "health",
    "apiserver",
    "cloudhub",
    "edgecontroller",
    "devicecontroller",
    "synccontroller",
    "router",
    "cloudstream",
)
EDGE_MODULES = ("health", "edgehub", "metamanager", "eventbus", "twin", "edged", "servicebus", "edgestream")
FAILED = 2


class StepFailed(Exception):
    def __init__(self, step: str, reason: str) -> None:
        super().__init__(f"{step}: {reason}")
        self.step = step
        self.reason = reason


class Steps:
    """Numbered progress lines: ``[2/5] Fetching the CA ... ok``."""

    def __init__(self, command: str, total: int) -> None:
        self.command = command
        self.total = total
        self.done = 0

    def run(self, title: str, fn: Callable[[], Any]) -> Any:
        self.done += 1
        print(f"[{self.done}/{self.total}] {title} ...", end=" ", flush=True)
        try:
            result = fn()
        except StepFailed:
            print("failed", flush=True)
            raise
        except Exception as exc:  # any failure is reported against its step
            print("failed", flush=True)
            raise StepFailed(title, f"{type(exc).__name__}: {exc}") from exc
        print("ok", flush=True)
        return result


def _default_dir(name: str) -> str:
    from kubeedge.profile import default_data_dir

    return str(default_data_dir(name))


def _installed(wanted: Sequence[str], explicit: str | None) -> list[str]:
    from kubeedge.registry import installed

    have = {p.name for p in installed("module")}
    if explicit:
        names = [n.strip() for n in explicit.split(",") if n.strip()]
        missing = [n for n in names if n not in have]
        if missing:
            raise StepFailed(
                "choose modules", f"not installed: {', '.join(missing)} (installed: {', '.join(sorted(have))})"
            )
        return names
    return [n for n in wanted if n in have]


def _write_yaml(path: Path, data: dict[str, Any]) -> None:
    import yaml

    path.write_text(yaml.safe_dump(data, sort_keys=False))


def _unit(description: str, profile: Path) -> str:
    exe = shutil.which("kubeedge") or f"{sys.executable} -m kubeedge"
    return (
        "[Unit]\n"
        f"Description={description}\n"
        "After=network-online.target\n\n"
        "[Service]\n"
        f"ExecStart={exe} run --profile {profile}\n"
        "Restart=always\nRestartSec=5\nKillSignal=SIGTERM\n\n"
        "[Install]\nWantedBy=multi-user.target\n"
    )


# -- init -------------------------------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> int:
    from kubeedge.plugins.common import pki

    data_dir = Path(args.data_dir).expanduser().resolve()
    addresses = [a.strip() for a in args.advertise_address.split(",") if a.strip()]
    steps = Steps("init", 5 + bool(args.systemd))
    pki_dir = data_dir / "pki"

    def check() -> None:
        import ipaddress

        for address in addresses:
            try:
                ipaddress.ip_address(address)
            except ValueError:
                if not address.replace("-", "").replace(".", "").isalnum():
                    raise StepFailed(
                        "check the arguments", f"{address!r} is neither an IP address nor a DNS name"
                    ) from None
        data_dir.mkdir(parents=True, exist_ok=True)

    steps.run(f"Checking arguments and creating {data_dir}", check)
    ca = steps.run("Creating the CA (kept if present)", lambda: pki.CA.ensure(pki_dir))

    def server_cert() -> None:
        cert, key = pki.issue_server_cert(ca, [*addresses, "127.0.0.1", "localhost"])
        pki.write_private(pki_dir / "server.key", pki.key_pem(key))
        (pki_dir / "server.crt").write_bytes(pki.cert_pem(cert))

    steps.run(f"Issuing the cloudhub certificate for {', '.join(addresses)}", server_cert)
    token = steps.run("Creating a join token (valid 24 h)", lambda: pki.make_token(ca))
    modules = _installed(CLOUD_MODULES, args.modules)
    if "cloudhub" not in modules:
        raise StepFailed("choose modules", "the cloud needs the cloudhub module")
    profile_path = data_dir / "cloud.yaml"

    def profile() -> None:
        section: dict[str, dict[str, Any]] = {name: {} for name in modules}
        section["cloudhub"] = {"advertiseAddress": addresses, "port": args.port, "httpsPort": args.https_port}
        _write_yaml(
            profile_path,
            {"role": "cloud", "node": {"name": "cloud"}, "dataDir": str(data_dir), "modules": section},
        )

    steps.run(f"Writing {profile_path} (modules: {', '.join(modules)})", profile)
    if args.systemd:
        unit = data_dir / "cloudcore.service"
        steps.run(f"Writing the systemd unit {unit}", lambda: unit.write_text(_unit("KubeEdge cloud", profile_path)))
    print()
    print("KubeEdge cloud initialised. Start it with:")
    print(f"  kubeedge run --profile {profile_path}")
    if args.systemd:
        unit_path = data_dir / "cloudcore.service"
        print(f"or install the unit: cp {unit_path} /etc/systemd/system/ && systemctl enable --now cloudcore")
    if not args.port or not args.https_port:
        print(f"(port 0 picks free ports; once started, the bound ones are in {data_dir / 'cloudhub.json'})")
    print("Then join an edge node with:")
    print(
        f"  keadm join --cloudcore-ipport {addresses[0]}:{args.port} --certport {args.https_port}"
        f" --token {token} --edgenode-name NODE"
    )
    return 0


# -- gettoken ---------------------------------------------------------------------------------------------


def cmd_gettoken(args: argparse.Namespace) -> int:
    from kubeedge.plugins.common import pki

    data_dir = Path(args.data_dir).expanduser()
    try:
        ca = pki.CA.load(data_dir / "pki")
    except pki.CertificateError as exc:
        raise StepFailed("read the CA", f"{exc}; run `keadm init --data-dir {data_dir}` first") from None
    stored = data_dir / "pki" / "token"
    if stored.exists():
        token = stored.read_text().strip()
        try:
            pki.verify_token(ca, token)
            remaining = pki.verify_token(ca, token)["exp"] - time.time()
            if remaining > 3600:  # the running cloud's current token, as KubeEdge's tokensecret
                print(token)
                return 0
        except pki.TokenError:
            pass
    print(pki.make_token(ca))
    return 0


# -- join -------------------------------------------------------------------------------------------------


def cmd_join(args: argparse.Namespace) -> int:
    import trio

    from kubeedge.plugins.common import pki
    from kubeedge.profile import NODE_NAME

    data_dir = Path(args.data_dir).expanduser().resolve()
    node = args.edgenode_name
    host, sep, port = args.cloudcore_ipport.rpartition(":")
    steps = Steps("join", 4 + bool(args.systemd))

    def check() -> None:
        if not sep or not host or not port.isdigit():
            raise StepFailed("check the arguments", f"--cloudcore-ipport {args.cloudcore_ipport!r} is not HOST:PORT")
        if not NODE_NAME.match(node):
            raise StepFailed("check the arguments", f"node name {node!r} is not a valid DNS-1123 name")
        try:
            pki.split_token(args.token)
        except pki.TokenError as exc:
            raise StepFailed("check the arguments", str(exc)) from None
        data_dir.mkdir(parents=True, exist_ok=True)

    steps.run(f"Checking arguments and creating {data_dir}", check)
    http_server = f"https://{host}:{args.certport}"

    def certificate() -> None:
        try:
            trio.run(pki.bootstrap_node_cert, http_server, args.token, node, data_dir / "pki")
        except pki.BootstrapError as exc:
            reason = exc.reason
            if "401" in reason:
                reason = f"wrong or expired token ({reason})"
            elif "409" in reason:
                reason = f"name in use ({reason})"
            raise StepFailed(exc.step, reason) from None

    steps.run(f"Fetching and checking the CA, getting the certificate of {node} from {http_server}", certificate)
    modules = _installed(EDGE_MODULES, args.modules)
    if "edgehub" not in modules:
        raise StepFailed("choose modules", "the edge needs the edgehub module")
    profile_path = data_dir / "edge.yaml"

    def profile() -> None:
        section: dict[str, dict[str, Any]] = {name: {} for name in modules}
        section["edgehub"] = {"server": f"{host}:{port}", "httpServer": http_server}
        if args.project_id:
            section["edgehub"]["projectID"] = args.project_id
        if "edgestream" in section:  # the cloud's tunnel for kubectl logs/exec, on the same host
            section["edgestream"] = {"server": f"{host}:{args.stream_port}"}
        _write_yaml(
            profile_path, {"role": "edge", "node": {"name": node}, "dataDir": str(data_dir), "modules": section}
        )

    steps.run(f"Writing {profile_path} (modules: {', '.join(modules)})", profile)
    steps.run("Checking the profile", lambda: _check_profile(profile_path))
    if args.systemd:
        unit = data_dir / "edgecore.service"
        steps.run(
            f"Writing the systemd unit {unit}",
            lambda: unit.write_text(_unit(f"KubeEdge edge node {node}", profile_path)),
        )
    print()
    print(f"Edge node {node} joined. Start it with:")
    print(f"  kubeedge run --profile {profile_path}")
    return 0


def _check_profile(path: Path) -> None:
    from kubeedge.profile import load_profile

    load_profile(str(path))


# -- reset ------------------------------------------------------------------------------------------------


def cmd_reset(args: argparse.Namespace) -> int:
    data_dir = Path(args.data_dir).expanduser()
    if not data_dir.exists():
        print(f"nothing to reset: {data_dir} does not exist")
        return 0
    targets = [
        data_dir / name
        for name in (
            "pki",
            "cloud.yaml",
            "edge.yaml",
            "cloudcore.service",
            "edgecore.service",
            "cloudhub.json",
            "kubeedge.db",
            "kubeedge.db-wal",
            "kubeedge.db-shm",
        )
    ]
    removed = 0
    steps = Steps("reset", 1)

    def remove() -> None:
        nonlocal removed
        for target in targets:
            if target.is_dir():
                shutil.rmtree(target)
                removed += 1
            elif target.exists():
                target.unlink()
                removed += 1

    steps.run(f"Removing what init/join made in {data_dir}", remove)
    print(f"removed {removed} item(s)")
    return 0


# -- wiring -----------------------------------------------------------------------------------------------


def _guard(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except StepFailed as exc:
            print(f"keadm {args.keadm_command}: failed at step '{exc.step}': {exc.reason}", file=sys.stderr)
            return FAILED

    return run


def _add_commands(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser("init", help="create the CA, the cloud's certificates, a token and DIR/cloud.yaml")
    p.add_argument("--advertise-address", default="127.0.0.1", metavar="IP[,IP...]", help="addresses edges use")
    p.add_argument("--data-dir", default=_default_dir("cloud"), metavar="DIR")
    p.add_argument("--port", type=int, default=10000, help="cloudhub websocket port (0: any free port)")
    p.add_argument("--https-port", type=int, default=10002, help="bootstrap HTTPS port (0: any free port)")
    p.add_argument("--modules", metavar="A,B", help="cloud modules to list (default: every installed one)")
    p.add_argument("--systemd", action="store_true", help="also write DIR/cloudcore.service")
    p.set_defaults(func=_guard(cmd_init))

    p = sub.add_parser("gettoken", help="print a join token (valid 24 h)")
    p.add_argument("--data-dir", default=_default_dir("cloud"), metavar="DIR")
    p.set_defaults(func=_guard(cmd_gettoken))

    p = sub.add_parser("join", help="get this node's certificate and write DIR/edge.yaml")
    p.add_argument("--cloudcore-ipport", required=True, metavar="HOST:PORT", help="cloudhub's websocket address")
    p.add_argument("--token", required=True, help="from `keadm gettoken` on the cloud")
    p.add_argument("--edgenode-name", required=True, metavar="NAME")
    p.add_argument("--certport", type=int, default=10002, help="cloudhub's bootstrap HTTPS port")
    p.add_argument("--stream-port", type=int, default=10004, help="cloudstream's tunnel port (kubectl logs/exec)")
    p.add_argument("--data-dir", default=None, metavar="DIR")
    p.add_argument("--project-id", default="", help="cloudhub projectID (default KubeEdge's)")
    p.add_argument("--modules", metavar="A,B", help="edge modules to list (default: every installed one)")
    p.add_argument("--systemd", action="store_true", help="also write DIR/edgecore.service")
    p.set_defaults(func=_guard(_join_defaults))

    p = sub.add_parser("reset", help="remove what init or join made in DIR")
    p.add_argument("role", nargs="?", choices=["cloud", "edge"], help="accepted for KubeEdge compatibility")
    p.add_argument("--data-dir", required=True, metavar="DIR")
    p.set_defaults(func=_guard(cmd_reset))


def _join_defaults(args: argparse.Namespace) -> int:
    if args.data_dir is None:
        args.data_dir = _default_dir(args.edgenode_name)
    return cmd_join(args)


def add_parser(subparsers: argparse._SubParsersAction[Any]) -> None:
    """``kubeedge keadm ...``."""
    parser = subparsers.add_parser("keadm", help="join nodes: init, gettoken, join, reset")
    sub = parser.add_subparsers(dest="keadm_command", metavar="COMMAND", required=True)
    _add_commands(sub)


def main(argv: Sequence[str] | None = None) -> int:
    """The ``keadm`` command."""
    parser = argparse.ArgumentParser(prog="keadm", description="Join KubeEdge nodes: init, gettoken, join, reset.")
    sub = parser.add_subparsers(dest="keadm_command", metavar="COMMAND", required=True)
    _add_commands(sub)
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:
        return int(exc.code or 0)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
