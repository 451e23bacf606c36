"""Whether a server can listen where it is asked to, checked before it starts.

``quill serve``, ``app``, ``up`` and ``ui`` load a model or start a child process before
their server binds: a port in use or a bad host would otherwise cost that wait and end in the
server's own error (uvicorn's exit 3, a traceback, or MLflow's "address already in use" and
exit 0). Each asks :func:`listen_problem` first. A server started for a benchmark or a test
takes a port nobody uses (:func:`free_port`).
"""

from __future__ import annotations

import contextlib
import errno
import socket


def listen_problem(host: str, ports: dict[str, int]) -> str | None:
    """Why a server cannot listen on ``host`` at each of ``ports`` (option name to port),
    naming the option that fixes it; None if it can.

    The probe binds as asyncio's ``create_server`` does (every address ``host`` resolves to,
    SO_REUSEADDR so that a port in TIME_WAIT counts as free, IPv6 sockets v6-only) and closes
    at once. Another process may still take a port between this check and the server's own
    bind; that rare race ends in the server's error, which is fine.
    """
    if len(set(ports.values())) < len(ports):
        return f"{' and '.join(ports)} must be different ports"
    try:
        addresses = socket.getaddrinfo(
            host or None, 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except (OSError, UnicodeError):
        return f"--host {host!r} is not an address or a name this machine can resolve"
    for option, port in ports.items():
        for family, kind, protocol, _, address in addresses:
            with socket.socket(family, kind, protocol) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                try:
                    probe.bind((address[0], port, *address[2:]))
                except OSError as exc:
                    return _bind_problem(exc, host, port, option)
    return None


def _bind_problem(exc: OSError, host: str, port: int, option: str) -> str:
    """What a failed bind of ``host:port`` means, and the option that fixes it."""
    if exc.errno == errno.EADDRINUSE:
        return f"port {port} on {host} is already in use (another quill server? pick {option})"
    if exc.errno == errno.EADDRNOTAVAIL:
        return (
            f"--host {host!r} is not an address of this machine (use one of its interfaces, "
            "127.0.0.1 or 0.0.0.0)"
        )
    if exc.errno == errno.EACCES:
        return f"port {port} needs privileges this user lacks (pick a {option} above 1023)"
    return f"cannot listen on {host} port {port}: {exc.strerror}"


def free_port() -> int:
    """A port free on 127.0.0.1 now (:func:`free_ports`)."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports free on 127.0.0.1 now: each probe stays bound until all are
    chosen (one probe at a time, the kernel may hand out the port it just took back). Another
    process may take one before the server binds it; a rare race a caller's error reports.

    >>> first, second = free_ports(2)
    >>> first != second and 1023 < first < 65536
    True
    """
    with contextlib.ExitStack() as stack:
        probes = [stack.enter_context(socket.socket()) for _ in range(count)]
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [int(probe.getsockname()[1]) for probe in probes]
