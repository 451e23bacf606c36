"""Whether a server can listen where it is asked to, checked before it starts.

``quill serve``, ``app``, ``up`` and ``ui`` load a model or start a child process before
their server binds: a port in use or a bad host would otherwise cost that wait and end in the
server's own error (uvicorn's exit 3, a traceback, or MLflow's "address already in use" and
exit 0). Each asks :func:`listen_problem` first.
"""

from __future__ import annotations

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
