"""A delaying TCP relay for benchmarks: user-space latency (this kernel has no netem) and a round-trip counter.

One asyncio event loop in one background thread serves every host: ``relay.add(target_ip, 22, listen=addr)``
opens a listener on ``addr`` (loopback, 127.0.0.0/8, or 198.18.0.0/15 only; port 22 by default, so a relayed
host looks like a host of its own and every contender's command line stays as it is) that forwards to
the target. Each direction is delayed by RTT/2,
byte order is preserved (one FIFO per direction), TCP_NODELAY is set on both sockets. The TCP handshake is
modelled too: the relay connects upstream RTT/2 after accepting, and the client's first bytes leave no
earlier than one RTT after its ``connect()`` (SYN + SYN-ACK), so a connection costs what it would on a real
link.

Per connection the relay counts, from the client's point of view:

- ``turns``: request/response turns = 1 (the TCP handshake) + the number of times the client sends after it
  was delivered server data since its previous send (a direction change client→server after
  server→client). Deterministic for a given protocol exchange; it counts every exchange, also ones the
  client did not wait for (e.g. a reply to a server's CLOSE).
- ``round_trips``: the longest causal chain of one-way trips that ends at the client, in round trips
  (Lamport-style: a chunk sent in a direction is one hop deeper than the deepest chunk delivered to its
  sender before it was sent; SYN and SYN-ACK are the first two hops). It ends with the last bytes the
  client received, so what the client sends last without waiting (a disconnect) is not counted: this is
  the number of RTTs the client waited for. It over-counts a send that followed a delivery without being
  caused by it (e.g. a client that sends its next request just after unrelated data arrived).

``log=True`` keeps a per-chunk log (time, direction, bytes, turn) per connection, for tracing.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field


@dataclass
class ConnStats:
    """What one client connection through the relay did."""

    target: str
    opened: float
    closed: float | None = None
    turns: int = 1            # the TCP handshake is the first
    depth_half: int = 2       # one-way hops on the longest causal chain ending at the client (SYN, SYN-ACK: 2)
    bytes_up: int = 0         # client -> server
    bytes_down: int = 0       # server -> client
    chunks_up: int = 0
    chunks_down: int = 0
    log: list[tuple[float, str, int, int, int]] | None = None  # (s since open, "c>s"|"s>c", bytes, turn, hops)
    # bookkeeping
    _down_since_up: bool = False
    _depth_seen_by_client: int = 2   # deepest s>c chunk delivered to the client so far
    _depth_seen_by_server: int = 1   # deepest c>s chunk delivered to the server so far (SYN: 1)

    @property
    def round_trips(self) -> float:
        """Round trips the client waited for: the critical path's one-way hops / 2."""
        return self.depth_half / 2


@dataclass
class _Listener:
    target: tuple[str, int]
    server: asyncio.base_events.Server
    port: int
    conns: list[ConnStats] = field(default_factory=list)


class Relay:
    """Delaying relay; a context manager. ``rtt`` (seconds) can be changed between runs with :meth:`set_rtt`."""

    def __init__(self, rtt: float = 0.0, *, log: bool = False) -> None:
        self.rtt = float(rtt)
        self.log = log
        self._loop = asyncio.new_event_loop()
        self._loop.set_exception_handler(   # connections cancelled by close() are not errors
            lambda loop, ctx: None if isinstance(ctx.get("exception"), asyncio.CancelledError)
            else loop.default_exception_handler(ctx))
        self._thread = threading.Thread(target=self._loop.run_forever, name="delay-relay", daemon=True)
        self._thread.start()
        self._listeners: dict[tuple[str, int], _Listener] = {}
        self._tasks: set[asyncio.Task] = set()

    # -- public ------------------------------------------------------------------------------------------
    def set_rtt(self, rtt: float) -> None:
        self.rtt = float(rtt)

    def add(self, host: str, port: int = 22, *, listen: str = "127.0.0.1", listen_port: int = 22) -> int:
        """Relay ``listen:listen_port`` (0: any free port) to ``host:port``; returns the port listened on."""
        import ipaddress

        addr = ipaddress.ip_address(listen)
        if not (addr.is_loopback or addr in ipaddress.ip_network("198.18.0.0/15")):
            raise ValueError("the relay listens on loopback or 198.18.0.0/15 only")
        fut = asyncio.run_coroutine_threadsafe(self._add(host, port, listen, listen_port), self._loop)
        return fut.result(timeout=30)

    def _add_sync(self, host: str, port: int, listen: str, listen_port: int) -> int:
        return self.add(host, port, listen=listen, listen_port=listen_port)

    def connections(self, listen: str, port: int = 22) -> list[ConnStats]:
        """The connections recorded (since the last :meth:`reset`) on one listener."""
        return list(self._listeners[(listen, port)].conns)

    def all_connections(self) -> dict[tuple[str, int], list[ConnStats]]:
        return {k: list(v.conns) for k, v in self._listeners.items()}

    def reset(self) -> None:
        """Forget the recorded connections (between measured runs)."""
        for lst in self._listeners.values():
            lst.conns.clear()

    def close(self) -> None:
        async def stop() -> None:
            for lst in self._listeners.values():
                lst.server.close()
            for t in list(self._tasks):
                t.cancel()
            await asyncio.sleep(0)

        if self._loop.is_running():
            with _suppress():
                asyncio.run_coroutine_threadsafe(stop(), self._loop).result(timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)

    def __enter__(self) -> "Relay":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- inside the loop -----------------------------------------------------------------------------------
    async def _add(self, host: str, port: int, listen: str, listen_port: int) -> int:
        holder: dict[str, _Listener] = {}

        async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            self._tasks.add(task)
            try:
                await self._serve(holder["l"], reader, writer)
            finally:
                self._tasks.discard(task)

        server = await asyncio.start_server(on_client, listen, listen_port, backlog=512, reuse_address=True)
        lport = server.sockets[0].getsockname()[1]
        holder["l"] = _Listener((host, port), server, lport)
        self._listeners[(listen, lport)] = holder["l"]
        return lport

    async def _serve(self, lst: _Listener, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        rtt = self.rtt
        half = rtt / 2
        t_open = time.monotonic()
        st = ConnStats(f"{lst.target[0]}:{lst.target[1]}", t_open, log=[] if self.log else None)
        lst.conns.append(st)
        _nodelay(cwriter)
        swriter = None
        try:
            if half:
                await asyncio.sleep(half)          # the SYN travels to the server
            try:
                sreader, swriter = await asyncio.wait_for(asyncio.open_connection(*lst.target), timeout=30)
            except (OSError, asyncio.TimeoutError):
                return
            _nodelay(swriter)
            # The client's connect() would return one RTT after it started: its data cannot leave earlier.
            not_before = t_open + rtt
            up = asyncio.create_task(self._pump(creader, swriter, st, True, half, not_before))
            down = asyncio.create_task(self._pump(sreader, cwriter, st, False, half, 0.0))
            _done, pending = await asyncio.wait({up, down}, return_when=asyncio.FIRST_EXCEPTION)
            # Each pump ends by half-closing its destination; wait (bounded) for the other side too.
            if pending:
                await asyncio.wait(pending, timeout=max(60.0, 4 * rtt))
            for t in pending:
                t.cancel()
        finally:
            st.closed = time.monotonic()
            for w in (cwriter, swriter):
                if w is not None:
                    with _suppress():
                        w.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, st: ConnStats, upward: bool,
                    half: float, not_before: float) -> None:
        """Read from one side, deliver to the other ``half`` seconds later, in order."""
        queue: deque[tuple[float, bytes, int]] = deque()
        ready = asyncio.Event()
        eof = False

        async def deliver() -> None:
            while True:
                while not queue:
                    if eof:
                        return
                    ready.clear()
                    await ready.wait()
                due, data, depth = queue.popleft()
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                # Delivered: the receiver has now seen a chunk this deep.
                if upward:
                    st._depth_seen_by_server = max(st._depth_seen_by_server, depth)
                else:
                    st._depth_seen_by_client = max(st._depth_seen_by_client, depth)
                    st._down_since_up = True
                await writer.drain()

        sender = asyncio.create_task(deliver())
        try:
            while True:
                data = await reader.read(65536)
                now = time.monotonic()
                if not data:
                    break
                if upward:
                    depth = st._depth_seen_by_client + 1
                    if st._down_since_up:
                        st.turns += 1
                        st._down_since_up = False
                    st.bytes_up += len(data)
                    st.chunks_up += 1
                else:
                    depth = st._depth_seen_by_server + 1
                    st.bytes_down += len(data)
                    st.chunks_down += 1
                    st.depth_half = max(st.depth_half, depth)
                if st.log is not None:
                    st.log.append((now - st.opened, "c>s" if upward else "s>c", len(data), st.turns, depth))
                queue.append((max(now, not_before) + half, data, depth))
                ready.set()
        except (ConnectionError, OSError):
            pass
        finally:
            eof = True
            ready.set()
            try:
                await asyncio.wait_for(sender, timeout=max(60.0, 4 * half))
            except (ConnectionError, OSError, asyncio.TimeoutError):
                sender.cancel()
            with _suppress():
                if writer.can_write_eof():
                    writer.write_eof()


def _nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with _suppress():
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, et, ev, tb) -> bool:  # noqa: ANN001
        return et is not None and issubclass(et, (Exception, asyncio.CancelledError))


# --- the relay in a process of its own ------------------------------------------------------------------
def _child(conn, rtt: float, log: bool) -> None:  # noqa: ANN001 - a multiprocessing Connection
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the parent stops us (Ctrl-C goes to the whole group)
    relay = Relay(rtt, log=log)
    try:
        while True:
            try:
                op, args = conn.recv()
            except EOFError:
                return
            try:
                if op == "close":
                    conn.send(("ok", None))
                    return
                conn.send(("ok", getattr(relay, op)(*args)))
            except Exception as exc:  # noqa: BLE001 - handed back to the caller
                conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        relay.close()


class RelayProcess:
    """The same :class:`Relay`, run in a child process, so its work does not compete for the benchmark
    process's GIL with an in-process contender (polyvm, paramiko). Same methods; a context manager."""

    def __init__(self, rtt: float = 0.0, *, log: bool = False) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_child, args=(child, rtt, log), name="delay-relay", daemon=True)
        self._proc.start()
        child.close()
        self.rtt = float(rtt)

    def _call(self, op: str, *args: object, timeout: float = 60.0) -> object:
        self._conn.send((op, args))
        if not self._conn.poll(timeout):
            raise TimeoutError(f"relay did not answer {op} within {timeout:.0f} s")
        status, value = self._conn.recv()
        if status != "ok":
            raise RuntimeError(f"relay {op}: {value}")
        return value

    def set_rtt(self, rtt: float) -> None:
        self._call("set_rtt", rtt)
        self.rtt = float(rtt)

    def add(self, host: str, port: int = 22, *, listen: str = "127.0.0.1", listen_port: int = 22) -> int:
        return self._call("_add_sync", host, port, listen, listen_port)  # type: ignore[return-value]

    def connections(self, listen: str, port: int = 22) -> list[ConnStats]:
        return self._call("connections", listen, port)  # type: ignore[return-value]

    def all_connections(self) -> dict[tuple[str, int], list[ConnStats]]:
        return self._call("all_connections")  # type: ignore[return-value]

    def reset(self) -> None:
        self._call("reset")

    def close(self) -> None:
        if self._proc.is_alive():
            try:
                self._call("close", timeout=10)
            except Exception:  # noqa: BLE001 - stop it below
                pass
            self._proc.join(timeout=10)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join(timeout=5)

    def __enter__(self) -> "RelayProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
