"""The embedded default's Celery broker: kombu's filesystem transport, one file per message,
with one change: every file it writes appears whole.

kombu's own ``_put`` creates a message's file in the queue folder and then writes it, so a
worker that lists the folder in between takes an empty or partial file and fails to decode it
(the message is lost); and its ``_queue_bind`` creates or rewrites an exchange's table in place,
so two processes declaring a queue at once can read a half-written table and fail to publish.
Here each file is written under a hidden name and renamed into place (a rename within a folder
is atomic), exchange tables are changed under one lock, and a taken message is moved to a
folder beside the queue instead of the system's temporary directory, so that move is a rename
too. Polling, routing and fanout are kombu's. (tests/test_embedded_shared_state.py has two
producers and a consumer that lose messages with kombu's transport and none with this one.)
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from queue import Empty
from time import time_ns
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils import encoding as kombu_encoding
from kombu.utils import json as kombu_json

# kombu ships py.typed but leaves most of its functions unannotated: calls to its Channel's own
# methods say so where they are made, and these helpers get their types as used here.
str_to_bytes: Callable[[str], bytes] = kombu_encoding.str_to_bytes
bytes_to_str: Callable[[bytes], str] = kombu_encoding.bytes_to_str
dumps: Callable[[object], str] = kombu_json.dumps
loads: Callable[[str], Any] = kombu_json.loads

#: A message as kombu's virtual transport hands it over: its body, headers and properties.
Payload = dict[str, Any]


def _write_whole(path: Path, data: bytes) -> None:
    partial = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.partial")
    try:
        partial.write_bytes(data)
        os.replace(partial, path)
    except OSError:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise


class Channel(filesystem.Channel):
    @contextlib.contextmanager
    def _tables_locked(self) -> Iterator[None]:
        self.control_folder.mkdir(parents=True, exist_ok=True)
        with open(self.control_folder / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def get_table(self, exchange: str) -> list[filesystem.exchange_queue_t]:
        """The exchange's bindings: the shared file's, and this process's own. (kombu keeps one
        binding state per process: a thread that finds a queue already bound there skips the
        file, and could publish before another thread has written it.)"""
        table: list[filesystem.exchange_queue_t]
        table = super().get_table(exchange)  # type: ignore[no-untyped-call]  # kombu's, unannotated
        try:
            own = self.state.exchanges[exchange].get("table", [])
        except KeyError:
            own = []
        return table + [
            filesystem.exchange_queue_t(*entry)
            for entry in own
            if filesystem.exchange_queue_t(*entry) not in table
        ]

    def _queue_bind(self, exchange: str, routing_key: str, pattern: str, queue: str) -> None:
        entry = filesystem.exchange_queue_t(routing_key or "", pattern or "", queue or "")
        # kombu's, unannotated: the exchange's table file under control_folder.
        file: Path = self._exchange_file(exchange)  # type: ignore[no-untyped-call]
        try:
            with self._tables_locked():
                # kombu's, unannotated: the file's table, without this process's bindings.
                queues = filesystem.Channel.get_table(self, exchange)  # type: ignore[no-untyped-call]
                if entry not in queues:
                    _write_whole(file, str_to_bytes(dumps([entry, *queues])))
        except OSError as exc:
            raise ChannelError(f"Cannot write {file}") from exc

    def _delete(
        self,
        queue: str,
        exchange: str,
        routing_key: str,
        pattern: str,
        *args: object,
        **kwargs: object,
    ) -> None:
        virtual_channel_delete = super(filesystem.Channel, self)._delete
        # kombu's, unannotated.
        virtual_channel_delete(queue, exchange, routing_key, pattern, *args, **kwargs)  # type: ignore[no-untyped-call]
        entry = filesystem.exchange_queue_t(routing_key or "", pattern or "", queue or "")
        # kombu's, unannotated: the exchange's table file under control_folder.
        file: Path = self._exchange_file(exchange)  # type: ignore[no-untyped-call]
        try:
            with self._tables_locked():
                # kombu's, unannotated: the file's table, without this process's bindings.
                queues = filesystem.Channel.get_table(self, exchange)  # type: ignore[no-untyped-call]
                if entry in queues:
                    queues.remove(entry)
                    _write_whole(file, str_to_bytes(dumps(queues)))
        except OSError as exc:
            raise ChannelError(f"Cannot write {file}") from exc

    # The signature of kombu's filesystem.Channel._put, which (like this one) differs from its
    # base's in the name of the payload and the **kwargs.
    def _put(self, queue: str, payload: Payload, **kwargs: object) -> None:  # type: ignore[override]
        # Sorted by name, so the name starts with the time (nanoseconds since the epoch: one
        # order for every process, also across a reboot, unlike kombu's monotonic clock).
        name = f"{time_ns():020d}_{uuid.uuid4()}.{queue}.msg"
        folder = self.data_folder_out
        try:
            _write_whole(Path(folder) / name, str_to_bytes(dumps(payload)))
        except OSError as exc:
            raise ChannelError(f"Cannot add a message to {folder!r}") from exc

    # The signature of kombu's filesystem.Channel._get, which (like this one) takes no timeout
    # (kombu never passes one).
    def _get(self, queue: str) -> Payload:  # type: ignore[override]
        suffix = f".{queue}.msg"
        taken_folder = Path(self.data_folder_in).parent / "taken"
        taken_folder.mkdir(exist_ok=True)
        for name in sorted(os.listdir(self.data_folder_in)):
            if name.startswith(".") or not name.endswith(suffix):
                continue
            taken = taken_folder / name
            try:
                os.rename(os.path.join(self.data_folder_in, name), taken)
            except OSError:
                continue  # another consumer took it first
            try:
                payload = taken.read_bytes()
                taken.unlink()
            except OSError as exc:
                raise ChannelError(f"Cannot read the message {name!r}") from exc
            message: Payload = loads(bytes_to_str(payload))
            return message
        raise Empty()


class FilesystemTransport(filesystem.Transport):
    Channel = Channel
    driver_type = "filesystem"
    driver_name = "filesystem"
