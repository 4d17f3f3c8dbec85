"""What the point-in-time recovery tests and ``bench/backup.py --pitr`` start for real: moto's S3
server behind TLS (pgBackRest speaks only HTTPS to S3) with a certificate made here, and a scratch
PostgreSQL cluster (Debian's server binaries, as the ``postgres`` user when run as root, since
initdb refuses root) archiving its WAL to pgBackRest.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PG_BIN = Path(os.environ.get("LLMP_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
RUN_AS = "postgres" if os.geteuid() == 0 else None


def missing_tools() -> str | None:
    """Why the PITR tests cannot run here (None: they can)."""
    if not shutil.which("pgbackrest"):
        return "no pgbackrest (apt-get install pgbackrest; `make test` installs it as root)"
    if not (PG_BIN / "initdb").exists():
        return f"no PostgreSQL server binaries in {PG_BIN} (set LLMP_TEST_PG_BIN)"
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def as_owner(argv: list[str]) -> list[str]:
    return ["runuser", "-u", RUN_AS, "--", *argv] if RUN_AS else argv


def give_to_owner(path: Path) -> None:
    if RUN_AS:
        shutil.chown(path, RUN_AS, RUN_AS)


# --------------------------------------------------------------------------- S3 over TLS


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (pgBackRest matches the endpoint against the DNS names of
    the certificate, so the address is one of them too) and its key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("127.0.0.1"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "s3-cert.pem", directory / "s3-key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    cert_path.chmod(0o644)
    return cert_path, key_path


@dataclass
class TlsS3:
    endpoint: str
    ca_file: Path


@contextmanager
def moto_tls_server(directory: Path) -> Iterator[TlsS3]:
    """moto's S3 (the same in-process state as ``ThreadedMotoServer``) on HTTPS.

    Werkzeug's server closes every connection after a response without TLS's close_notify;
    pgBackRest reads a body-less answer (Content-Length 0, Connection: close) to the end and
    takes that bare close for an error. So the server says close_notify before closing."""
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    class Handler(MotoRequestHandler):
        protocol_version = "HTTP/1.1"  # pgBackRest refuses HTTP/1.0 answers

        def log_request(self, *args: Any, **kwargs: Any) -> None:
            pass

    cert, key = self_signed_certificate(directory)
    server = make_server(
        "127.0.0.1",
        0,
        DomainDispatcherApplication(create_backend_app),
        threaded=True,
        request_handler=Handler,
        ssl_context=(str(cert), str(key)),
    )
    close = server.shutdown_request

    def shutdown_request(request: Any) -> None:
        try:
            request.settimeout(2)
            request = request.unwrap()
        except (OSError, ValueError, ssl.SSLError):
            pass
        close(request)

    server.shutdown_request = shutdown_request  # type: ignore[method-assign]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield TlsS3(f"https://127.0.0.1:{server.server_address[1]}", cert)
    finally:
        server.shutdown()
        thread.join(timeout=10)


# --------------------------------------------------------------------------- a cluster


@dataclass
class ScratchCluster:
    data: Path
    socket_dir: Path
    port: int

    def settings_dict(self, name: str) -> dict[str, Any]:
        """Django's settings for database ``name`` on this cluster."""
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": name,
            "USER": "postgres",
            "PASSWORD": "",
            "HOST": str(self.socket_dir),
            "PORT": self.port,
            "OPTIONS": {},
        }

    def psql(self, sql: str, database: str = "postgres") -> str:
        result = subprocess.run(
            [
                str(PG_BIN / "psql"),
                "-h",
                str(self.socket_dir),
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-Atc",
                sql,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        return result.stdout.strip()

    def stop(self, mode: str = "fast") -> None:
        subprocess.run(
            as_owner([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"]),
            capture_output=True,
            check=False,
        )


def init_cluster(
    directory: Path, *, settings: dict[str, str], env: dict[str, str], port: int | None = None
) -> ScratchCluster:
    """initdb and start a cluster in ``directory/data`` on a free port (socket in
    ``directory``, no TCP), with ``settings`` added to its postgresql.conf and ``env`` in its
    server's environment (what its archive_command needs)."""
    data = directory / "data"
    data.mkdir(mode=0o700)
    give_to_owner(data)
    subprocess.run(
        as_owner(
            [
                str(PG_BIN / "initdb"),
                "-D",
                str(data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "--no-instructions",
            ]
        ),
        capture_output=True,
        check=True,
    )
    port = port or free_port()
    lines = {
        **settings,
        "port": str(port),
        "unix_socket_directories": str(directory),
        "listen_addresses": "",
        "fsync": "off",
        "max_wal_size": "1GB",
    }
    with (data / "postgresql.conf").open("a") as conf:
        for name, value in lines.items():
            quoted = value.replace("'", "''")
            conf.write(f"{name} = '{quoted}'\n")
    cluster = ScratchCluster(data=data, socket_dir=directory, port=port)
    subprocess.run(
        as_owner(
            [
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(data),
                "-w",
                "-l",
                str(directory / "server.log"),
                "start",
            ]
        ),
        capture_output=True,
        check=True,
        env={**os.environ, **env},
    )
    return cluster


def copy_database(source: dict[str, Any], cluster: ScratchCluster, name: str) -> None:
    """Create database ``name`` on ``cluster`` as a copy of ``source`` (the platform's schema
    and what the migrations wrote), through pg_dump | psql."""
    cluster.psql(f'CREATE DATABASE "{name}"')
    dump = subprocess.Popen(
        [
            str(PG_BIN / "pg_dump"),
            "--no-owner",
            "--no-privileges",
            "-h",
            str(source.get("HOST") or "127.0.0.1"),
            "-p",
            str(source.get("PORT") or 5432),
            "-U",
            str(source.get("USER") or "postgres"),
            str(source["NAME"]),
        ],
        stdout=subprocess.PIPE,
        env={**os.environ, "PGPASSWORD": str(source.get("PASSWORD") or "")},
    )
    subprocess.run(
        [
            str(PG_BIN / "psql"),
            "-h",
            str(cluster.socket_dir),
            "-p",
            str(cluster.port),
            "-U",
            "postgres",
            "-d",
            name,
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
        ],
        stdin=dump.stdout,
        stdout=subprocess.DEVNULL,
        check=True,
    )
    if dump.wait() != 0:
        raise RuntimeError("pg_dump of the test database failed")
