"""The ``hub`` command: run the server; manage users, trunks, rooms, recordings,
console operators and the directory.

Management commands write straight to ``DATA_DIR/hub.sqlite3``; a running server sees
the change on its next lookup, no restart needed.

Exit codes: 0 success, 1 failure (no such user, already exists, database busy),
2 bad input (usage errors, invalid names, ports, prefixes).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import NoReturn, TextIO

from dispatch.errors import DispatchError, ImportFailed
from dispatch.errors import InvalidInput as DispatchInvalid
from hub import __version__
from hub.config import (
    DEFAULT_BIND,
    DEFAULT_DATA_DIR,
    DEFAULT_HTTP_PORT,
    DEFAULT_RTP_PORTS,
    DEFAULT_SIP_PORT,
    DEFAULT_TLS_PORT,
    LOG_LEVELS,
    ConfigError,
    ServeConfig,
)
from hub.store import DEFAULT_TRUNK_PORT, InvalidInput, Store, StoreError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class _UsageError(Exception):
    """Raised instead of exiting so ``main`` returns the code (and tests can call it)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that reports errors on one line and never calls sys.exit."""

    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{self.prog}: error: {message} (see {self.prog} --help)", EXIT_USAGE)

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            print(message.rstrip("\n"), file=sys.stderr)
        raise _UsageError("", status)


Handler = Callable[[argparse.Namespace], int]


# ------------------------------------------------------------------------ arguments


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port {value} out of range 0-65535")
    return value


def _trunk_port(text: str) -> int:
    value = _port(text)
    if value == 0:
        raise argparse.ArgumentTypeError("trunk port must be 1-65535")
    return value


def _port_range(text: str) -> tuple[int, int]:
    low_text, sep, high_text = text.partition("-")
    if not sep or not low_text.isdigit() or not high_text.isdigit():
        raise argparse.ArgumentTypeError(f"invalid port range {text!r}, expected LOW-HIGH")
    return int(low_text), int(high_text)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The whole ``hub`` command line; handlers are in the ``handler`` default."""
    # --data-dir is accepted at every level; SUPPRESS keeps a subcommand's absent
    # option from overwriting one given before it.
    common = _Parser(add_help=False)
    common.add_argument(
        "--data-dir",
        type=Path,
        default=argparse.SUPPRESS,
        metavar="DIR",
        help=f"data directory holding hub.sqlite3 (default: ./{DEFAULT_DATA_DIR})",
    )

    parser = _Parser(
        prog="hub",
        parents=[common],
        description="Dispatch hub: SIP B2BUA, media bridges and dispatch console.",
    )
    parser.add_argument("--version", action="version", version=f"hub {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    # -- serve
    serve = commands.add_parser(
        "serve", parents=[common], help="run the hub", description="Run the hub in the foreground."
    )
    serve.add_argument(
        "--bind", default=DEFAULT_BIND, metavar="ADDR", help="listen address (default: %(default)s)"
    )
    serve.add_argument(
        "--sip-port",
        type=_port,
        default=DEFAULT_SIP_PORT,
        metavar="N",
        help="SIP UDP/TCP port (default: %(default)s)",
    )
    serve.add_argument(
        "--http-port",
        type=_port,
        default=DEFAULT_HTTP_PORT,
        metavar="N",
        help="HTTP console port (default: %(default)s)",
    )
    serve.add_argument(
        "--tls-port",
        type=_port,
        default=None,
        metavar="N",
        help=f"SIP TLS port (default: {DEFAULT_TLS_PORT} when --tls-cert/--tls-key are given)",
    )
    serve.add_argument("--tls-cert", type=Path, metavar="FILE", help="PEM certificate chain")
    serve.add_argument("--tls-key", type=Path, metavar="FILE", help="PEM private key")
    serve.add_argument(
        "--media-address",
        metavar="ADDR",
        help="IP address to advertise in SDP (default: derived from --bind)",
    )
    serve.add_argument(
        "--rtp-ports",
        type=_port_range,
        default=DEFAULT_RTP_PORTS,
        metavar="LO-HI",
        help="RTP/RTCP port range (default: {}-{})".format(*DEFAULT_RTP_PORTS),
    )
    serve.add_argument(
        "--log-level", choices=LOG_LEVELS, default="info", help="(default: %(default)s)"
    )
    serve.add_argument(
        "--auth-algorithms",
        default="MD5",
        metavar="ALG[,ALG]",
        help="digest algorithms to challenge with, most preferred first: MD5, SHA-256 "
        "(default: %(default)s)",
    )
    serve.add_argument(
        "--recording-segment-seconds", type=float, default=60.0, metavar="SECONDS",
        help="length of each recording segment file (default: %(default)s)",
    )
    serve.add_argument(
        "--ring-timeout", type=float, default=60.0, metavar="SECONDS",
        help="how long a call rings before the caller gets 480 (default: %(default)s)",
    )
    serve.add_argument(
        "--database", default=os.environ.get("HUB_DATABASE_URL"), metavar="URL",
        help="incidents, plans and resources: postgresql://USER@HOST/DB or sqlite:///PATH "
        "(default: $HUB_DATABASE_URL, else DATA_DIR/incidents.sqlite3)",
    )
    serve.add_argument(
        "--notifier", default="log", metavar="SPEC",
        help="where text notices to responders go: log, or webhook:URL (each notice "
        "POSTed as JSON; an SMS gateway) (default: %(default)s)",
    )
    serve.set_defaults(handler=_serve)

    # -- user
    user = commands.add_parser(
        "user",
        parents=[common],
        help="manage SIP users",
        description="Manage SIP users (they register as USER@realm and authenticate "
        "with Digest; only hashes of the password are stored).",
    )
    user_commands = user.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    user_add = user_commands.add_parser("add", parents=[common], help="add a user")
    user_add.add_argument("name", metavar="USER", help="user name: 1-64 of A-Z a-z 0-9 . _ ~ -")
    user_add.add_argument(
        "--password", required=True, metavar="PW", help="password ('-' reads it from stdin)"
    )
    user_add.add_argument("--display-name", metavar="NAME", help="name shown to callees")
    user_add.set_defaults(handler=_user_add)
    user_list = user_commands.add_parser("list", parents=[common], help="list users")
    user_list.set_defaults(handler=_user_list)
    user_remove = user_commands.add_parser(
        "remove", parents=[common], help="remove a user and its registrations"
    )
    user_remove.add_argument("name", metavar="USER")
    user_remove.set_defaults(handler=_user_remove)

    # -- trunk
    trunk = commands.add_parser(
        "trunk",
        parents=[common],
        help="manage SIP trunks",
        description="Manage SIP trunks. A dialled number goes to the trunk with the "
        "longest matching --prefix; the prefix is stripped before the number is sent "
        "to the trunk unless the trunk has --keep-prefix.",
    )
    trunk_commands = trunk.add_subparsers(dest="trunk_command", required=True, metavar="ACTION")
    trunk_add = trunk_commands.add_parser(
        "add",
        parents=[common],
        help="add a trunk",
        description="Add a trunk. Numbers starting with --prefix are sent to HOST:PORT; "
        "the prefix is stripped by default (--keep-prefix keeps it). Calls from "
        "--inbound-from are accepted as coming from this trunk; without it the trunk "
        "is outbound only.",
    )
    trunk_add.add_argument("name", metavar="NAME", help="trunk name: 1-64 of A-Z a-z 0-9 . _ ~ -")
    trunk_add.add_argument("--host", required=True, metavar="H", help="hostname or IP address")
    trunk_add.add_argument(
        "--port",
        type=_trunk_port,
        default=DEFAULT_TRUNK_PORT,
        metavar="N",
        help="(default: %(default)s)",
    )
    trunk_add.add_argument(
        "--prefix",
        default="",
        metavar="DIGITS",
        help="dialled numbers starting with these digits use this trunk; stripped "
        "before sending unless --keep-prefix (default: empty, matches any number)",
    )
    trunk_add.add_argument(
        "--keep-prefix",
        action="store_true",
        help="send the number with its prefix (default: strip the prefix)",
    )
    trunk_add.add_argument(
        "--inbound-from",
        metavar="ADDR[:PORT]",
        help="accept calls from this IP address (any port unless :PORT; IPv6 as [ADDR]:PORT)",
    )
    trunk_add.add_argument(
        "--transport", choices=("udp", "tcp"), default="udp", help="(default: %(default)s)"
    )
    trunk_add.set_defaults(handler=_trunk_add)
    trunk_list = trunk_commands.add_parser("list", parents=[common], help="list trunks")
    trunk_list.set_defaults(handler=_trunk_list)
    trunk_remove = trunk_commands.add_parser("remove", parents=[common], help="remove a trunk")
    trunk_remove.add_argument("name", metavar="NAME")
    trunk_remove.set_defaults(handler=_trunk_remove)

    # -- room
    room = commands.add_parser(
        "room",
        parents=[common],
        help="manage conference rooms",
        description="Manage conference rooms. Anyone who may call (a registered user, a "
        "trunk caller) dials the room's number and joins; the room lives on as members "
        "come and go.",
    )
    room_commands = room.add_subparsers(dest="room_command", required=True, metavar="ACTION")
    room_add = room_commands.add_parser("add", parents=[common], help="add a room")
    room_add.add_argument("number", metavar="NUMBER", help="the number dialled: 1-16 digits")
    room_add.add_argument("--name", metavar="NAME", help="what the room is called")
    room_add.add_argument("--pin", metavar="DIGITS",
                          help="callers key these digits, then #, to get in")
    room_add.add_argument("--record", action="store_true", help="record every session")
    room_add.add_argument("--rate", type=int, choices=(8000, 16000, 48000), default=8000,
                          help="mixing rate: 16000 or 48000 for wideband (default: %(default)s)")
    room_add.set_defaults(handler=_room_add)
    room_list = room_commands.add_parser("list", parents=[common], help="list rooms")
    room_list.set_defaults(handler=_room_list)
    room_remove = room_commands.add_parser("remove", parents=[common], help="remove a room")
    room_remove.add_argument("number", metavar="NUMBER")
    room_remove.set_defaults(handler=_room_remove)

    # -- dispatch number
    dnum = commands.add_parser(
        "dispatch-number",
        parents=[common],
        help="show or set the dispatch number",
        description="Calls to the dispatch number (default 119) queue for the dispatchers. "
        "It is read at each call: no restart needed.",
    )
    dnum_commands = dnum.add_subparsers(dest="dnum_command", required=True, metavar="ACTION")
    dnum_set = dnum_commands.add_parser("set", parents=[common], help="set the number")
    dnum_set.add_argument("number", metavar="NUMBER", help="1-16 digits")
    dnum_set.set_defaults(handler=_dispatch_number_set)
    dnum_show = dnum_commands.add_parser("show", parents=[common], help="show the number")
    dnum_show.set_defaults(handler=_dispatch_number_show)

    # -- operator
    operator = commands.add_parser(
        "operator",
        parents=[common],
        help="manage console operators",
        description="Manage the people who log in to the dispatch console. Roles: "
        "dispatcher (runs calls, reads the directory), supervisor (also edits the "
        "directory and reads the audit log), admin (also manages operators and users). "
        "Passwords are stored as argon2id hashes.",
    )
    operator_commands = operator.add_subparsers(
        dest="operator_command", required=True, metavar="ACTION")
    operator_add = operator_commands.add_parser("add", parents=[common], help="add an operator")
    operator_add.add_argument("name", metavar="NAME",
                              help="operator name: 1-64 of A-Z a-z 0-9 . _ ~ @ -")
    operator_add.add_argument("--password", required=True, metavar="PW",
                              help="at least 8 characters ('-' reads it from stdin)")
    operator_add.add_argument("--role", required=True,
                              choices=("dispatcher", "supervisor", "admin"))
    operator_add.add_argument("--display-name", metavar="NAME", help="name shown in the console")
    operator_add.set_defaults(handler=_operator_add)
    operator_list = operator_commands.add_parser("list", parents=[common],
                                                 help="list operators")
    operator_list.set_defaults(handler=_operator_list)
    operator_remove = operator_commands.add_parser(
        "remove", parents=[common], help="remove an operator and revoke its sessions")
    operator_remove.add_argument("name", metavar="NAME")
    operator_remove.set_defaults(handler=_operator_remove)

    # -- directory
    directory = commands.add_parser(
        "directory",
        parents=[common],
        help="manage the directory (people, units, groups)",
        description="The dispatch directory. Every SIP user is a person already; "
        "import adds units, people with several endpoints, and groups.",
    )
    directory_commands = directory.add_subparsers(
        dest="directory_command", required=True, metavar="ACTION")
    directory_import = directory_commands.add_parser(
        "import",
        parents=[common],
        help="import people, units and groups from CSV",
        description="Import a CSV file with a header row; columns (any order, only name "
        "required): name, kind (person|device), title, unit (a path: 'City/Station 1'), "
        "endpoints ('sip:1001;mobile:13800138000', preferred first), groups "
        "('Fire team 3;Night shift'). A row matching a person's name and unit updates it. "
        "All or nothing: every bad line is reported and nothing is written.",
    )
    directory_import.add_argument("file", type=Path, metavar="FILE", help="CSV file ('-': stdin)")
    directory_import.set_defaults(handler=_directory_import)

    # -- recording
    recording = commands.add_parser(
        "recording",
        parents=[common],
        help="list and export recordings",
        description="Recordings of bridges (the mix) and legs, from the data directory's "
        "recordings index. A recording cut by a crash shows as interrupted once the hub "
        "has restarted.",
    )
    recording_commands = recording.add_subparsers(
        dest="recording_command", required=True, metavar="ACTION"
    )
    recording_list = recording_commands.add_parser(
        "list", parents=[common], help="list recordings, newest first"
    )
    recording_list.add_argument(
        "--limit",
        type=_positive_int,
        default=50,
        metavar="N",
        help="show at most N recordings (default: %(default)s)",
    )
    recording_list.add_argument("--bridge", metavar="ID", help="only recordings of this bridge")
    recording_list.set_defaults(handler=_recording_list)
    recording_export = recording_commands.add_parser(
        "export",
        parents=[common],
        help="export a recording as one audio file",
        description="Join a recording's segments into one playable file; the format "
        "follows FILE's extension: .ogg or .opus (Opus), .flac, .wav.",
    )
    recording_export.add_argument("id", metavar="ID", help="recording id, as listed")
    recording_export.add_argument("file", type=Path, metavar="FILE", help="file to write")
    recording_export.set_defaults(handler=_recording_export)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``hub`` command; returns the process exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        handler: Handler = args.handler
        return handler(args)
    except _UsageError as exc:
        if str(exc):
            _error(str(exc))
        return exc.code
    except InvalidInput as exc:
        _error(f"hub: error: {exc}")
        return EXIT_USAGE
    except DispatchError as exc:
        _error(f"hub: error: {exc}")
        return EXIT_USAGE if isinstance(exc, DispatchInvalid) else EXIT_FAILURE
    except StoreError as exc:
        _error(f"hub: error: {exc}")
        return EXIT_FAILURE
    except sqlite3.Error as exc:
        _error(f"hub: error: database: {exc}")
        return EXIT_FAILURE


# ------------------------------------------------------------------------- handlers


def _data_dir(args: argparse.Namespace) -> Path:
    value: Path = getattr(args, "data_dir", DEFAULT_DATA_DIR)
    return value


def _error(message: str) -> None:
    print(message, file=sys.stderr)


def _serve(args: argparse.Namespace) -> int:
    tls_port: int | None = args.tls_port
    if tls_port is None and (args.tls_cert is not None or args.tls_key is not None):
        tls_port = DEFAULT_TLS_PORT
    for option, path in (("--tls-cert", args.tls_cert), ("--tls-key", args.tls_key)):
        if path is not None and not path.is_file():
            raise _UsageError(f"hub serve: error: {option}: no such file {str(path)!r}", EXIT_USAGE)
    try:
        config = ServeConfig(
            data_dir=_data_dir(args),
            bind=args.bind,
            sip_port=args.sip_port,
            http_port=args.http_port,
            tls_port=tls_port,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            media_address=args.media_address,
            rtp_ports=args.rtp_ports,
            log_level=args.log_level,
            auth_algorithms=tuple(a.strip().upper() for a in args.auth_algorithms.split(",")
                                  if a.strip()),
            ring_timeout=args.ring_timeout,
            recording_segment_seconds=args.recording_segment_seconds,
            database_url=args.database or None,
            notifier=args.notifier,
        )
    except ConfigError as exc:
        raise _UsageError(f"hub serve: error: {exc}", EXIT_USAGE) from None
    # Imported here: the server pulls in the whole stack, management commands need none of it.
    try:
        import hub.server as server
    except ModuleNotFoundError as exc:
        if exc.name != "hub.server":
            raise
        _error("hub serve: error: this installation has no server (hub.server is missing)")
        return EXIT_FAILURE

    code: int = server.run(config)
    return code


def _read_password(value: str, stdin: TextIO) -> str:
    if value != "-":
        return value
    line = stdin.readline()
    return line.removesuffix("\n").removesuffix("\r")


def _user_add(args: argparse.Namespace) -> int:
    password = _read_password(args.password, sys.stdin)
    with Store.open(_data_dir(args)) as store:
        user = store.add_user(args.name, password, args.display_name)
        realm = store.realm
    print(f"added user {user.name}@{realm}")
    return EXIT_OK


def _user_list(args: argparse.Namespace) -> int:
    now = time.time()
    with Store.open(_data_dir(args)) as store:
        users = store.list_users()
        rows = [
            [
                user.name,
                user.display_name or "-",
                str(store.count_bindings(now, user.name)),
                _when(user.created_at),
            ]
            for user in users
        ]
        realm = store.realm
    if not rows:
        print(f"no users (realm {realm})")
        return EXIT_OK
    print(_table(["USER", "DISPLAY NAME", "CONTACTS", "CREATED"], rows))
    print(f"{len(rows)} user(s), realm {realm}")
    return EXIT_OK


def _user_remove(args: argparse.Namespace) -> int:
    with Store.open(_data_dir(args)) as store:
        store.remove_user(args.name)
    print(f"removed user {args.name}")
    return EXIT_OK


def _dispatch_number_set(args: argparse.Namespace) -> int:
    with Store.open(_data_dir(args)) as store:
        store.set_dispatch_number(args.number)
    print(f"dispatch number set to {args.number}")
    return EXIT_OK


def _dispatch_number_show(args: argparse.Namespace) -> int:
    with Store.open(_data_dir(args)) as store:
        print(store.dispatch_number)
    return EXIT_OK


def _room_add(args: argparse.Namespace) -> int:
    with Store.open(_data_dir(args)) as store:
        room = store.add_room(args.number, name=args.name, pin=args.pin, record=args.record,
                              rate=args.rate)
    extras = [f"{room.rate} Hz"]
    if room.pin:
        extras.append("PIN")
    if room.record:
        extras.append("recorded")
    label = f" ({room.name})" if room.name else ""
    print(f"added room {room.number}{label}: {', '.join(extras)}")
    return EXIT_OK


def _room_list(args: argparse.Namespace) -> int:
    with Store.open(_data_dir(args)) as store:
        rooms = store.list_rooms()
    if not rooms:
        print("no rooms")
        return EXIT_OK
    rows = [[r.number, r.name or "-", "yes" if r.pin else "no", "yes" if r.record else "no",
             str(r.rate)] for r in rooms]
    print(_table(["ROOM", "NAME", "PIN", "RECORD", "RATE"], rows))
    return EXIT_OK


def _operator_add(args: argparse.Namespace) -> int:
    from console.auth import AuthService

    password = _read_password(args.password, sys.stdin)
    with Store.open(_data_dir(args)) as store:
        operator = AuthService(store).add_operator(
            args.name, args.role, password=password, display_name=args.display_name)
    print(f"added operator {operator.name} ({operator.role.value})")
    return EXIT_OK


def _operator_list(args: argparse.Namespace) -> int:
    from console.auth import AuthService

    with Store.open(_data_dir(args)) as store:
        operators = AuthService(store).list_operators()
    if not operators:
        print("no operators (add one: hub operator add NAME --password PW --role admin)")
        return EXIT_OK
    rows = [[o.name, o.role.value, o.display_name or "-", _when(o.created_at)]
            for o in operators]
    print(_table(["OPERATOR", "ROLE", "DISPLAY NAME", "CREATED"], rows))
    return EXIT_OK


def _operator_remove(args: argparse.Namespace) -> int:
    from console.auth import AuthService

    with Store.open(_data_dir(args)) as store:
        revoked = AuthService(store).remove_operator(args.name)
    print(f"removed operator {args.name} ({revoked} session(s) revoked)")
    return EXIT_OK


def _directory_import(args: argparse.Namespace) -> int:
    from dispatch.directory import DirectoryService

    try:
        data = sys.stdin.buffer.read() if str(args.file) == "-" else args.file.read_bytes()
    except OSError as exc:
        _error(f"hub directory import: error: cannot read {args.file}: {exc.strerror}")
        return EXIT_FAILURE
    try:
        with Store.open(_data_dir(args)) as store:
            result = DirectoryService(store).import_csv(data)
    except ImportFailed as exc:
        for problem in exc.errors:
            _error(f"{args.file}:{problem.line}: {problem.message}")
        _error(f"hub directory import: error: nothing imported ({len(exc.errors)} error(s))")
        return EXIT_USAGE
    print(f"imported {args.file}: {result.people_created} person(s) added, "
          f"{result.people_updated} updated, {result.units_created} unit(s) and "
          f"{result.groups_created} group(s) created, {result.endpoints} endpoint(s)")
    return EXIT_OK


def _room_remove(args: argparse.Namespace) -> int:
    with Store.open(_data_dir(args)) as store:
        store.remove_room(args.number)
    print(f"removed room {args.number}")
    return EXIT_OK


def _trunk_add(args: argparse.Namespace) -> int:
    with Store.open(_data_dir(args)) as store:
        trunk = store.add_trunk(
            args.name,
            args.host,
            port=args.port,
            prefix=args.prefix,
            strip_prefix=not args.keep_prefix,
            inbound_from=args.inbound_from,
            transport=args.transport,
        )
        same_prefix = [
            t.name for t in store.list_trunks() if t.prefix == trunk.prefix and t.name != trunk.name
        ]
    target = f"{_host_port(trunk.host, trunk.port)}/{trunk.transport}"
    if trunk.prefix:
        kept = "kept" if not trunk.strip_prefix else "stripped"
        route = f"numbers starting {trunk.prefix} ({kept}) -> {target}"
    else:
        route = f"any number -> {target}"
    inbound = f"; accepts calls from {trunk.inbound_from}" if trunk.inbound_from else ""
    print(f"added trunk {trunk.name}: {route}{inbound}")
    if same_prefix:
        first = min([*same_prefix, trunk.name])
        _error(
            f"hub: warning: prefix {trunk.prefix or '(any)'!s} is also routed by "
            f"{', '.join(sorted(same_prefix))}; {first} wins (first by name)"
        )
    return EXIT_OK


def _trunk_list(args: argparse.Namespace) -> int:
    with Store.open(_data_dir(args)) as store:
        trunks = store.list_trunks()
    if not trunks:
        print("no trunks")
        return EXIT_OK
    rows = [
        [
            t.name,
            _host_port(t.host, t.port),
            t.transport,
            t.prefix or "(any)",
            ("strip" if t.strip_prefix else "keep") if t.prefix else "-",
            t.inbound_from or "-",
        ]
        for t in trunks
    ]
    print(_table(["TRUNK", "TARGET", "TRANSPORT", "PREFIX", "PREFIX MODE", "INBOUND FROM"], rows))
    return EXIT_OK


def _trunk_remove(args: argparse.Namespace) -> int:
    with Store.open(_data_dir(args)) as store:
        store.remove_trunk(args.name)
    print(f"removed trunk {args.name}")
    return EXIT_OK


# ---------------------------------------------------------------------- recordings
# recordings/ pulls in PyAV: imported by these handlers only, so user and trunk
# commands stay fast.


def _recording_list(args: argparse.Namespace) -> int:
    from recordings.errors import RecordingError
    from recordings.index import RecordingIndex

    try:
        with RecordingIndex.open(_data_dir(args)) as index:
            recordings = index.list(limit=args.limit, bridge_id=args.bridge)
    except RecordingError as exc:
        _error(f"hub recording list: error: {exc}")
        return EXIT_FAILURE
    if not recordings:
        print("no recordings")
        return EXIT_OK
    rows = []
    for info in recordings:
        where = f"{info.bridge_id}/{info.call_id or '-'}"
        if info.leg_id is not None:
            where += f" leg {info.leg_id}"
        closed = sum(1 for segment in info.segments if segment.closed)
        segments = str(closed) if closed == len(info.segments) else f"{closed}/{len(info.segments)}"
        rows.append(
            [
                info.id,
                where,
                _when_seconds(info.started_at),
                "-" if info.ended_at is None else _when_seconds(info.ended_at),
                _duration(info.duration),
                info.status,
                segments,
                _participants([p.peer or p.leg_id for p in info.participants]),
            ]
        )
    headers = ["ID", "BRIDGE/CALL", "STARTED", "ENDED", "DURATION", "STATUS", "SEGMENTS"]
    print(_table([*headers, "PARTICIPANTS"], rows))
    more = " (newest first; --limit N shows more)" if len(rows) == args.limit else ""
    print(f"{len(rows)} recording(s){more}")
    return EXIT_OK


def _recording_export(args: argparse.Namespace) -> int:
    from recordings.errors import RecordingError, RecordingNotFound, UnsupportedFormat
    from recordings.export import export, export_format
    from recordings.index import RecordingIndex

    try:
        export_format(args.file)
        with RecordingIndex.open(_data_dir(args)) as index:
            result = export(index, args.id, args.file)
    except UnsupportedFormat as exc:
        _error(f"hub recording export: error: {exc}")
        return EXIT_USAGE
    except RecordingNotFound:
        _error(f"hub recording export: error: no recording {args.id!r}")
        return EXIT_FAILURE
    except RecordingError as exc:
        _error(f"hub recording export: error: {exc}")
        return EXIT_FAILURE
    skipped = f", {len(result.skipped)} unreadable segment(s) skipped" if result.skipped else ""
    print(
        f"exported {result.recording_id} to {result.path}: {_duration(result.duration)}, "
        f"{result.segments} segment(s), {result.sample_rate} Hz{skipped}"
    )
    return EXIT_OK


def _when_seconds(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _duration(seconds: float) -> str:
    whole = int(seconds + 0.5)
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def _participants(names: Sequence[str], width: int = 40) -> str:
    unique = list(dict.fromkeys(names))
    if not unique:
        return "-"
    text = ", ".join(unique)
    if len(text) <= width:
        return text
    shown: list[str] = []
    for name in unique:
        if len(", ".join([*shown, name])) > width - 6:
            break
        shown.append(name)
    return ", ".join(shown) + f" +{len(unique) - len(shown)}"


# --------------------------------------------------------------------------- output


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp).astimezone().strftime("%Y-%m-%d %H:%M")


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [headers, *rows]
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
