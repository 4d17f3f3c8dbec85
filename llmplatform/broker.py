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
from pathlib import Path
from queue import Empty
from time import time_ns

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads


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
    def _tables_locked(self):  # type: ignore[no-untyped-def]
        self.control_folder.mkdir(parents=True, exist_ok=True)
        with open(self.control_folder / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def get_table(self, exchange: str) -> list:  # type: ignore[type-arg]
        """The exchange's bindings: the shared file's, and this process's own. (kombu keeps one
        binding state per process: a thread that finds a queue already bound there skips the
        file, and could publish before another thread has written it.)"""
        table = super().get_table(exchange)
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
        file = self._exchange_file(exchange)
        try:
            with self._tables_locked():
                queues = filesystem.Channel.get_table(self, exchange)
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
        virtual_channel_delete(queue, exchange, routing_key, pattern, *args, **kwargs)
        entry = filesystem.exchange_queue_t(routing_key or "", pattern or "", queue or "")
        file = self._exchange_file(exchange)
        try:
            with self._tables_locked():
                queues = filesystem.Channel.get_table(self, exchange)
                if entry in queues:
                    queues.remove(entry)
                    _write_whole(file, str_to_bytes(dumps(queues)))
        except OSError as exc:
            raise ChannelError(f"Cannot write {file}") from exc

    def _put(self, queue: str, payload: dict, **kwargs: object) -> None:
        # Sorted by name, so the name starts with the time (nanoseconds since the epoch: one
        # order for every process, also across a reboot, unlike kombu's monotonic clock).
        name = f"{time_ns():020d}_{uuid.uuid4()}.{queue}.msg"
        folder = self.data_folder_out
        try:
            _write_whole(Path(folder) / name, str_to_bytes(dumps(payload)))
        except OSError as exc:
            raise ChannelError(f"Cannot add a message to {folder!r}") from exc

    def _get(self, queue: str) -> dict:
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
            return loads(bytes_to_str(payload))
        raise Empty()


class FilesystemTransport(filesystem.Transport):
    Channel = Channel
    driver_type = "filesystem"
    driver_name = "filesystem"
