"""A burst of connections to a worker with session processes: every one gets a reply.

The worker accepts and hands each connection to a session process over a Unix socket whose queue is
short; a connection that cannot be handed over at once waits for room, and one that no process can
take is told `421` — never closed without a word.
"""

from __future__ import annotations

import asyncio
import socket

import pytest

from servers.models import VirtualServer
from servers.workers.dispatch import HANDOFF_TIMEOUT_S, TAG_PLAIN, Dispatcher
from tests.factories import make_server
from tests.helpers import worker_running
from tests.test_smtp_access import configure

pytestmark = pytest.mark.backend_independent

# Enough to fill the channels: before the backlog, about one in ten got no reply at all.
BURST = 600
UNAVAILABLE = b"421 4.3.2 mx.test Service temporarily unavailable, try again later\r\n"


async def first_lines(port: int, count: int) -> list[bytes]:
    """Open `count` connections at once (from several addresses) and read each one's first line."""

    async def one(n: int) -> bytes:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port, local_addr=(f"127.0.0.{n % 16 + 1}", 0)), 10
            )
        except (OSError, TimeoutError) as exc:
            return f"connect failed: {exc!r}".encode()
        try:
            return await asyncio.wait_for(reader.readline(), 15)
        except (OSError, TimeoutError) as exc:
            return f"read failed: {exc!r}".encode()
        finally:
            writer.close()

    return await asyncio.gather(*(one(n) for n in range(count)))


@pytest.fixture
def server(supervised) -> VirtualServer:
    return configure(worker_running(make_server(domain="lab.test", start=True)), worker_processes=2)


def test_every_connection_of_a_burst_is_greeted_or_told_421(server):
    lines = asyncio.run(first_lines(server.port, BURST))

    unanswered = [line for line in lines if not line.startswith((b"220 ", b"421 "))]
    assert unanswered == [], f"{len(unanswered)} of {BURST} without a greeting or 421, e.g. {unanswered[:3]}"
    assert sum(line.startswith(b"220 ") for line in lines) > BURST // 2


def dispatcher_with_channels(count: int) -> tuple[Dispatcher, list[socket.socket]]:
    """A dispatcher whose session processes are only the far ends of their channels (read by the test)."""
    dispatcher = Dispatcher(
        count=count,
        child_argv=lambda index, fd: [],
        refusal=lambda open_sessions: None,
        unavailable=lambda: UNAVAILABLE,
    )
    far_ends = []
    for child in dispatcher.children:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setblocking(False)
        child.channel = ours
        child.ready = True  # as after its first report
        far_ends.append(theirs)
    return dispatcher, far_ends


def accepted_connection() -> tuple[socket.socket, socket.socket]:
    """(the server's end, the client's end) of a connection."""
    server_end, client_end = socket.socketpair()
    client_end.settimeout(5)
    return server_end, client_end


def close_all(dispatcher: Dispatcher, sockets: list[socket.socket]) -> None:
    """Close what a scenario opened: the channels, the connections still waiting, the test's own ends."""
    for child in dispatcher.children:
        for pending in child.backlog:
            pending.connection.close()
        if child.channel is not None:
            child.channel.close()
    for sock in sockets:
        sock.close()


def received_descriptors(channel: socket.socket) -> int:
    channel.setblocking(False)
    count = 0
    while True:
        try:
            _message, fds, _flags, _address = socket.recv_fds(channel, 16, 4)
        except BlockingIOError:
            return count
        for fd in fds:
            socket.socket(fileno=fd).close()
            count += 1


def test_a_connection_no_session_process_can_take_is_told_421():
    async def scenario() -> bytes:
        dispatcher, _far_ends = dispatcher_with_channels(2)
        for child in dispatcher.children:
            dispatcher._forget_channel(child)  # both processes gone
        server_end, client_end = accepted_connection()
        dispatcher._dispatch(server_end, "192.0.2.1", TAG_PLAIN)
        try:
            return client_end.recv(512)
        finally:
            close_all(dispatcher, [*_far_ends, client_end])

    assert asyncio.run(scenario()) == UNAVAILABLE


def test_connections_wait_for_room_on_a_full_channel_and_all_arrive_in_order():
    async def scenario() -> tuple[int, int]:
        dispatcher, far_ends = dispatcher_with_channels(1)
        clients = []
        for _ in range(300):  # far more than the channel's queue holds
            server_end, client_end = accepted_connection()
            clients.append(client_end)
            dispatcher._dispatch(server_end, "192.0.2.1", TAG_PLAIN)
        waiting = len(dispatcher.children[0].backlog)
        received = 0
        for _ in range(10_000):
            received += received_descriptors(far_ends[0])
            if received == 300:
                break
            await asyncio.sleep(0)  # the loop runs the flush once the channel has room
        close_all(dispatcher, [*far_ends, *clients])
        return waiting, received

    waiting, received = asyncio.run(scenario())
    assert waiting > 0
    assert received == 300


def test_the_backlog_of_a_session_process_that_died_goes_to_another():
    async def scenario() -> tuple[int, int, int]:
        dispatcher, far_ends = dispatcher_with_channels(2)
        first, second = dispatcher.children
        clients = []
        for n in range(1000):
            server_end, client_end = accepted_connection()
            clients.append(client_end)
            dispatcher._dispatch(server_end, f"192.0.2.{n % 50}", TAG_PLAIN)
        assert first.backlog
        sent_to_first = first.sent
        dispatcher._forget_channel(first)
        result = len(first.backlog), sent_to_first, len(second.backlog) + received_descriptors(far_ends[1])
        close_all(dispatcher, [*far_ends, *clients])
        return result

    left_with_first, sent_to_first, second_has = asyncio.run(scenario())
    assert left_with_first == 0
    assert second_has == 1000 - sent_to_first


def test_a_connection_its_session_process_does_not_take_in_time_is_told_421():
    async def scenario() -> tuple[bytes, int]:
        dispatcher, _far_ends = dispatcher_with_channels(1)  # nobody reads the far end
        clients = []
        for _ in range(300):
            server_end, client_end = accepted_connection()
            clients.append(client_end)
            dispatcher._dispatch(server_end, "192.0.2.1", TAG_PLAIN)
        child = dispatcher.children[0]
        waiting = len(child.backlog)
        for pending in child.backlog:
            pending.accepted_at -= HANDOFF_TIMEOUT_S + 1
        dispatcher._expire_backlog(child)
        result = clients[-1].recv(512), waiting - len(child.backlog)
        close_all(dispatcher, [*_far_ends, *clients])
        return result

    last_reply, answered = asyncio.run(scenario())
    assert answered > 0
    assert last_reply == UNAVAILABLE


def test_a_starting_session_process_gets_no_connection_while_another_is_ready():
    async def scenario() -> tuple[int, int]:
        dispatcher, far_ends = dispatcher_with_channels(2)
        starting, ready = dispatcher.children
        starting.ready = False  # just spawned: it could still die before taking anything
        clients = []
        for n in range(40):  # clients of both processes
            server_end, client_end = accepted_connection()
            clients.append(client_end)
            dispatcher._dispatch(server_end, f"192.0.2.{n}", TAG_PLAIN)
        result = received_descriptors(far_ends[0]) + len(starting.backlog), received_descriptors(far_ends[1])
        close_all(dispatcher, [*far_ends, *clients])
        return result

    held_by_starting, taken_by_ready = asyncio.run(scenario())
    assert held_by_starting == 0
    assert taken_by_ready == 40


def test_connections_wait_for_a_starting_session_process_and_reach_it_once_it_is_ready():
    async def scenario() -> tuple[int, int, int]:
        dispatcher, far_ends = dispatcher_with_channels(1)
        child = dispatcher.children[0]
        child.ready = False
        clients = []
        for _ in range(5):
            server_end, client_end = accepted_connection()
            clients.append(client_end)
            dispatcher._dispatch(server_end, "192.0.2.1", TAG_PLAIN)
        before_ready = received_descriptors(far_ends[0])
        assert child.channel is not None
        channel_fd = child.channel.fileno()
        asyncio.get_running_loop().add_reader(channel_fd, dispatcher._read_reports, child)
        far_ends[0].send(b"0 0")  # its first report: ready
        received = 0
        for _ in range(1000):
            received += received_descriptors(far_ends[0])
            if received == 5:
                break
            await asyncio.sleep(0)
        asyncio.get_running_loop().remove_reader(channel_fd)
        result = before_ready, received, len(child.backlog)
        close_all(dispatcher, [*far_ends, *clients])
        return result

    before_ready, received, still_waiting = asyncio.run(scenario())
    assert before_ready == 0
    assert received == 5
    assert still_waiting == 0


def test_a_session_process_that_dies_while_starting_leaves_no_connection_unanswered():
    async def scenario() -> list[bytes]:
        dispatcher, far_ends = dispatcher_with_channels(1)
        child = dispatcher.children[0]
        child.ready = False
        clients = []
        for _ in range(3):
            server_end, client_end = accepted_connection()
            clients.append(client_end)
            dispatcher._dispatch(server_end, "192.0.2.1", TAG_PLAIN)
        dispatcher._forget_channel(child)  # it died before its first report
        replies = [client.recv(512) for client in clients]
        close_all(dispatcher, [*far_ends, *clients])
        return replies

    assert asyncio.run(scenario()) == [UNAVAILABLE] * 3
