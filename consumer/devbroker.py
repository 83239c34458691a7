"""Local Apache Kafka clusters (KRaft mode) for development, demos and tests.

The Kafka server jars are fetched from Maven Central with ``mvn`` on first use and
cached (see :func:`cache_dir`).  :class:`KafkaCluster` runs one or more combined
broker+controller JVMs bound to loopback ports, and the ``dev-broker`` command
(:func:`main`, also ``python -m consumer.devbroker``) keeps one running in the
foreground until interrupted.

Only Java (17+) and Maven are needed on the machine; nothing is installed system-wide.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import fcntl
import functools
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Self, TypeVar

from consumer.lifetime import die_with_parent
from consumer.ports import free_ports, is_free

KAFKA_VERSION = "4.1.1"
SCALA = "2.13"

# The kafka_2.13 artifact ships no SLF4J binding, which leaves the server silent.
# Kafka 4.x logs through Log4j 2; this binding matches the Log4j version it depends on.
_LOG4J_VERSION = "2.24.3"
_COMPLETE_MARKER = ".complete"
_READY_TOPIC = "_devbroker_ready"
_READY_GROUP = "_devbroker_ready"
_STOP_TIMEOUT = 20.0
_PORT_ATTEMPTS = 4
_TEMP_PREFIX = "sms-kafka-"
_SASL_TEXT = re.compile(r"[A-Za-z0-9._~@%+-]{1,128}")
SASL_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")
"""Mechanisms of the secure listener of a cluster started with ``sasl_users``."""

_T = TypeVar("_T")

_POM_TEMPLATE = """<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.sms-consumer</groupId>
  <artifactId>kafka-server-libs</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_{scala}</artifactId>
      <version>{version}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version>
    </dependency>
  </dependencies>
</project>
"""

_LOG4J2_CONFIG = """\
status = warn
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = STDOUT
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""


class HarnessError(RuntimeError):
    """A local Kafka cluster could not be fetched, started or stopped."""


# --------------------------------------------------------------------------- artifacts


def cache_dir() -> Path:
    """Directory holding downloaded Kafka jars.

    ``$SMS_CONSUMER_CACHE`` if set, otherwise ``~/.cache/sms-consumer``.  Each Kafka
    version lives in ``kafka-<version>/libs`` below it.
    """
    override = os.environ.get("SMS_CONSUMER_CACHE")
    if override:
        return Path(override).expanduser()
    return Path.home() / ".cache" / "sms-consumer"


def _java_executable() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        candidate = Path(java_home) / "bin" / "java"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("java")
    if found is None:
        raise HarnessError(
            "java was not found on PATH (nor in $JAVA_HOME/bin). The local Kafka broker needs "
            "a Java 17+ runtime, e.g. `apt-get install openjdk-17-jre-headless` or "
            "`brew install openjdk@17`."
        )
    return found


def _mvn_executable() -> str:
    found = shutil.which("mvn")
    if found is None:
        raise HarnessError(
            "mvn was not found on PATH. It is used once to download the Kafka server jars "
            "from Maven Central; install Apache Maven, e.g. `apt-get install maven` or "
            "`brew install maven`."
        )
    return found


def ensure_kafka(version: str = KAFKA_VERSION) -> Path:
    """Return the directory with the Kafka server jars, downloading them on first use.

    The download runs ``mvn dependency:copy-dependencies`` into a staging directory
    that is renamed into place only once complete, under an exclusive file lock, so
    concurrent callers (e.g. parallel test workers) download at most once.

    Raises:
        HarnessError: java or mvn is missing, or the download failed.
    """
    root = cache_dir()
    target = root / f"kafka-{version}"
    libs = target / "libs"
    if (target / _COMPLETE_MARKER).is_file():
        return libs

    _java_executable()
    mvn = _mvn_executable()
    root.mkdir(parents=True, exist_ok=True)
    with (root / f"kafka-{version}.lock").open("a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            if (target / _COMPLETE_MARKER).is_file():
                return libs
            staging = Path(tempfile.mkdtemp(prefix=f".kafka-{version}.", dir=root))
            try:
                staging.chmod(0o755)
                _download(mvn, version, staging / "libs")
                (staging / _COMPLETE_MARKER).write_text(f"kafka_{SCALA}:{version}\n")
                if target.exists():
                    shutil.rmtree(target)
                staging.rename(target)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)
    return libs


def _download(mvn: str, version: str, dest: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="kafka-pom-") as pom_dir:
        pom = Path(pom_dir) / "pom.xml"
        pom.write_text(_POM_TEMPLATE.format(scala=SCALA, version=version, log4j=_LOG4J_VERSION))
        cmd = [
            mvn,
            "-q",
            "-B",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={dest}",
            "-DincludeScope=runtime",
        ]
        result = subprocess.run(cmd, cwd=pom_dir, capture_output=True, text=True, check=False)
    jars = list(dest.glob("*.jar")) if dest.is_dir() else []
    if result.returncode != 0 or not any(j.name.startswith(f"kafka_{SCALA}-") for j in jars):
        output = (result.stdout + result.stderr).strip()[-4000:]
        raise HarnessError(
            f"downloading Kafka {version} with Maven failed (exit {result.returncode}); "
            f"Maven Central must be reachable.\n{output}"
        )


# --------------------------------------------------------------------------- processes


def _new_cluster_id() -> str:
    """A random Kafka cluster id (URL-safe base64 of 16 bytes, as Kafka's ``Uuid``)."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def _pid_is_dead(pid_text: str) -> bool:
    if not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def _remove_abandoned_workdirs() -> None:
    """Delete temporary cluster directories left behind by processes that were killed."""
    for path in Path(tempfile.gettempdir()).glob(f"{_TEMP_PREFIX}*-*"):
        pid_text = path.name[len(_TEMP_PREFIX) :].split("-", 1)[0]
        if path.is_dir() and _pid_is_dead(pid_text):
            shutil.rmtree(path, ignore_errors=True)


def _remove_abandoned_files(paths: Iterable[Path], prefix: str) -> None:
    """Delete ``<prefix>.<pid>-<suffix>`` files whose creating process is gone."""
    for path in paths:
        pid_text = path.name[len(prefix) + 1 :].split("-", 1)[0]
        if _pid_is_dead(pid_text):
            path.unlink(missing_ok=True)


def _read_properties(path: Path) -> dict[str, str]:
    props: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "!")) and "=" in line:
            key, _, value = line.partition("=")
            props[key.strip()] = value.strip()
    return props


def _run_in_thread(factory: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """Run a coroutine on a fresh event loop in a helper thread and return its result.

    Keeps the synchronous API usable from a thread that already runs an event loop.
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = asyncio.run(factory())
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, name="kafka-ready-check", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    result: _T = box["result"]
    return result


class _PortTaken(Exception):
    """A node could not bind one of its ports."""


@dataclass
class _Node:
    index: int
    port: int
    controller_port: int
    directory: Path
    secure_port: int | None = None
    process: subprocess.Popen[bytes] | None = None
    cds_dump: Path | None = None

    @property
    def node_id(self) -> int:
        return self.index + 1

    @property
    def properties_file(self) -> Path:
        return self.directory / "server.properties"

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    @property
    def log_file(self) -> Path:
        return self.directory / "kafka.log"

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, limit: int = 3000) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return ""
        return text[-limit:]


# --------------------------------------------------------------------------- cluster


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of a cluster's TLS client listener."""

    keystore: Path
    """The broker's unencrypted PKCS#8 private key followed by its certificate chain (one file for all nodes,
    so the certificate should name ``127.0.0.1``)."""
    truststore: Path
    """CA certificates that sign the clients' certificates (used with ``client_auth``)."""
    client_auth: bool = False
    """Require a client certificate (mutual TLS)."""


class KafkaCluster:
    """A local Kafka cluster of combined broker+controller nodes on 127.0.0.1.

    Every node is both a broker and a KRaft controller voter.  Replication factors of
    the internal topics are ``min(3, brokers)``; with three or more brokers
    ``min.insync.replicas`` is 2, so ``acks=all`` writes keep working with one broker
    down.  Node ``i`` (0-based index used by the broker control methods) has Kafka node
    id ``i + 1``.

    The JVMs are killed if this Python process dies, even by SIGKILL (Linux).

    Example::

        with KafkaCluster(brokers=3) as cluster:
            servers = cluster.bootstrap_servers
    """

    def __init__(
        self,
        brokers: int = 1,
        partitions: int = 3,
        workdir: Path | None = None,
        extra_properties: dict[str, str] | None = None,
        heap: str = "512m",
        *,
        port: int | None = None,
        version: str = KAFKA_VERSION,
        sasl_users: Mapping[str, str] | None = None,
        tls: TlsFiles | None = None,
    ) -> None:
        """Describe a cluster; nothing runs until :meth:`start`.

        Args:
            brokers: number of nodes.
            partitions: default partition count of auto-created topics.
            workdir: directory for configs, data and logs, kept after :meth:`stop`
                (:meth:`start` recreates its ``node-<id>`` directories).  A temporary
                directory, deleted by :meth:`stop`, is used when omitted.
            extra_properties: server properties applied to every node, overriding the
                defaults.
            heap: JVM maximum heap per node (``-Xmx``).
            port: fixed client port of the first node (node ``i`` gets ``port + i``);
                free ports are picked when omitted.
            version: Kafka version to run.
            sasl_users: ``{name: password}``: users of a second client listener
                (see :attr:`secure_bootstrap_servers`), with SCRAM-SHA-512,
                SCRAM-SHA-256 and PLAIN.  SCRAM credentials are written at storage
                format time.  Names and passwords are limited to letters, digits and
                ``._~@%+-``.
            tls: PEM files that put TLS on that second listener.  With ``sasl_users``
                it speaks ``SASL_SSL``, alone ``SSL``; ``sasl_users`` alone gives
                ``SASL_PLAINTEXT``.  Brokers and controllers talk PLAINTEXT among
                themselves on their own listeners.
        """
        if brokers < 1:
            raise ValueError("brokers must be at least 1")
        if partitions < 1:
            raise ValueError("partitions must be at least 1")
        self._brokers = brokers
        self._partitions = partitions
        self._requested_workdir = workdir
        self._extra = dict(extra_properties or {})
        self._heap = heap
        self._fixed_port = port
        self._version = version
        self._sasl_users = dict(sasl_users or {})
        for name, password in self._sasl_users.items():
            if not _SASL_TEXT.fullmatch(name) or not _SASL_TEXT.fullmatch(password):
                raise ValueError("SASL user names and passwords: 1-128 letters, digits or ._~@%+-")
        self._tls = tls
        self._workdir: Path | None = None
        self._owns_workdir = False
        self._nodes: list[_Node] = []
        self._ready = False
        self._archive_ok: bool | None = None
        self._libs: Path | None = None
        self._java: str | None = None
        # PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, so every
        # JVM is started from this one long-lived thread, whichever thread asks.
        self._spawner: ThreadPoolExecutor | None = None
        self._lock = threading.RLock()

    # ----------------------------------------------------------------- properties

    @property
    def brokers(self) -> int:
        """Number of nodes in the cluster."""
        return self._brokers

    @property
    def broker_ports(self) -> list[int]:
        """Client (PLAINTEXT) port of each node, by index."""
        self._require_started()
        return [node.port for node in self._nodes]

    @property
    def bootstrap_servers(self) -> str:
        """Comma-separated ``127.0.0.1:port`` list of all nodes."""
        return ",".join(f"127.0.0.1:{port}" for port in self.broker_ports)

    @property
    def secure_protocol(self) -> str | None:
        """Security protocol of the second client listener: ``SASL_PLAINTEXT``, ``SSL``, ``SASL_SSL`` or none."""
        if self._tls is not None:
            return "SASL_SSL" if self._sasl_users else "SSL"
        return "SASL_PLAINTEXT" if self._sasl_users else None

    @property
    def secure_bootstrap_servers(self) -> str:
        """Comma-separated ``127.0.0.1:port`` list of the second client listener (``sasl_users`` or ``tls``)."""
        self._require_started()
        if self.secure_protocol is None:
            raise HarnessError("the cluster was started without sasl_users or tls")
        return ",".join(f"127.0.0.1:{node.secure_port}" for node in self._nodes)

    @property
    def workdir(self) -> Path:
        """Directory with each node's ``node-<id>/`` configs, data and ``kafka.log``."""
        self._require_started()
        assert self._workdir is not None
        return self._workdir

    @property
    def started(self) -> bool:
        """Whether :meth:`start` has completed and :meth:`stop` has not been called."""
        return self._ready

    def log_file(self, index: int) -> Path:
        """Server log (stdout and stderr) of node ``index``."""
        return self._node(index).log_file

    def is_running(self, index: int) -> bool:
        """Whether node ``index``'s JVM is alive."""
        return self._node(index).alive()

    def pids(self) -> list[int | None]:
        """Process id of each node's JVM, ``None`` for nodes that are not running."""
        self._require_started()
        return [n.process.pid if n.process is not None and n.alive() else None for n in self._nodes]

    # ----------------------------------------------------------------- lifecycle

    def start(self, timeout: float = 60.0) -> None:
        """Start all nodes and block until the cluster serves clients.

        Ready means every node answers a Metadata request listing all brokers, a
        topic can be created and written with ``acks=all``, and the group coordinator
        answers.  Jar download time (first use only) is not part of ``timeout``.

        Raises:
            HarnessError: a node failed to start or the cluster was not ready in time;
                the message includes the tail of the node's log.
        """
        with self._lock:
            if self._nodes:
                raise HarnessError("cluster is already started")
            self._libs = ensure_kafka(self._version)
            self._java = _java_executable()
            self._prepare_workdir()
            deadline = time.monotonic() + timeout
            attempts = 1 if self._fixed_port is not None else _PORT_ATTEMPTS
            try:
                for attempt in range(1, attempts + 1):
                    self._layout_nodes()
                    try:
                        self._format_storage(deadline)
                        for node in self._nodes:
                            self._launch(node)
                        self._wait_ready(deadline, self._nodes, full_check=True)
                        self._ready = True
                        return
                    except _PortTaken:
                        self._kill_all()
                        if attempt == attempts:
                            raise HarnessError("a port of the Kafka cluster is taken by another process") from None
            except BaseException:
                self.stop()
                raise

    def stop(self, timeout: float = _STOP_TIMEOUT, *, graceful: bool = True) -> None:
        """Stop all nodes and wait for their processes to end.

        Graceful stop sends SIGTERM, then SIGKILL to nodes still running after
        ``timeout`` seconds.  With three or more nodes a graceful stop takes about 5 s
        longer, because the last KRaft leader waits for a successor that never comes;
        ``graceful=False`` kills at once, for clusters whose data is thrown away.

        Deletes the working directory if it was a temporary one.  Safe to call twice.
        """
        with self._lock:
            running = [n for n in self._nodes if n.process is not None]
            for node in running:
                self._signal(node, signal.SIGTERM if graceful else signal.SIGKILL)
            deadline = time.monotonic() + timeout
            for node in running:
                self._reap(node, deadline)
            self._nodes = []
            self._ready = False
            if self._spawner is not None:
                self._spawner.shutdown(wait=True)
                self._spawner = None
            if self._owns_workdir and self._workdir is not None:
                shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
            self._owns_workdir = False

    def stop_broker(self, index: int, timeout: float = _STOP_TIMEOUT) -> None:
        """Shut node ``index`` down gracefully (SIGTERM, SIGKILL after ``timeout``)."""
        with self._lock:
            node = self._node(index)
            if node.process is None:
                return
            self._signal(node, signal.SIGTERM)
            self._reap(node, time.monotonic() + timeout)

    def kill_broker(self, index: int) -> None:
        """Kill node ``index`` abruptly (SIGKILL), as in a crash."""
        with self._lock:
            node = self._node(index)
            if node.process is None:
                return
            self._signal(node, signal.SIGKILL)
            self._reap(node, time.monotonic() + _STOP_TIMEOUT)

    def start_broker(self, index: int, timeout: float = 60.0) -> None:
        """Restart a stopped or killed node with its previous ports and data.

        Blocks until the node is back in the cluster metadata.
        """
        with self._lock:
            node = self._node(index)
            if node.alive():
                raise HarnessError(f"node {node.node_id} is already running")
            self._reap(node, time.monotonic())  # collect a node that exited on its own
            ports = [node.port, node.controller_port, *([node.secure_port] if node.secure_port else [])]
            if not all(is_free(p) for p in ports):
                raise HarnessError(f"a port of node {node.node_id} is taken by another process")
            self._launch(node)
            try:
                self._wait_ready(time.monotonic() + timeout, [node], full_check=False)
            except _PortTaken:
                raise HarnessError(f"a port of node {node.node_id} is taken by another process") from None

    def __enter__(self) -> Self:
        if not self.started:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ----------------------------------------------------------------- internals

    def _require_started(self) -> None:
        if not self._nodes:
            raise HarnessError("cluster is not started")

    def _node(self, index: int) -> _Node:
        self._require_started()
        if not 0 <= index < len(self._nodes):
            raise IndexError(f"no node with index {index} (cluster has {len(self._nodes)})")
        return self._nodes[index]

    def _prepare_workdir(self) -> None:
        if self._requested_workdir is not None:
            self._workdir = Path(self._requested_workdir).resolve()
            self._workdir.mkdir(parents=True, exist_ok=True)
            self._owns_workdir = False
        else:
            _remove_abandoned_workdirs()
            self._workdir = Path(tempfile.mkdtemp(prefix=f"{_TEMP_PREFIX}{os.getpid()}-"))
            self._owns_workdir = True
        (self._workdir / "log4j2.properties").write_text(_LOG4J2_CONFIG)

    def _layout_nodes(self) -> None:
        assert self._workdir is not None
        count = self._brokers
        others = 2 if self.secure_protocol else 1  # controller port, and the secure listener's port
        if self._fixed_port is not None:
            client_ports = [self._fixed_port + i for i in range(count)]
            taken = [p for p in client_ports if not is_free(p)]
            if taken:
                raise HarnessError(f"port(s) {taken} on 127.0.0.1 are already in use")
            first = free_ports(others * count, exclude=client_ports)
            ports = list(range(first, first + others * count))
        else:
            first = free_ports((1 + others) * count)
            ports = list(range(first, first + (1 + others) * count))
            client_ports, ports = ports[:count], ports[count:]
        controller_ports, secure_ports = ports[:count], ports[count:]
        self._nodes = []
        for i in range(count):
            directory = self._workdir / f"node-{i + 1}"
            if directory.exists():
                shutil.rmtree(directory)
            directory.mkdir(parents=True)
            secure_port = secure_ports[i] if secure_ports else None
            self._nodes.append(_Node(i, client_ports[i], controller_ports[i], directory, secure_port))
        for node in self._nodes:
            node.properties_file.write_text(self._render_properties(node))

    def _server_properties(self, node: _Node) -> dict[str, str]:
        replication = min(3, self._brokers)
        min_isr = 2 if self._brokers >= 3 else 1
        voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self._nodes)
        props = {
            "process.roles": "broker,controller",
            "node.id": str(node.node_id),
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{node.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{node.port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(node.data_dir),
            "num.partitions": str(self._partitions),
            "default.replication.factor": str(replication),
            "min.insync.replicas": str(min_isr),
            "auto.create.topics.enable": "true",
            "offsets.topic.replication.factor": str(replication),
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": str(replication),
            "transaction.state.log.min.isr": str(min_isr),
            "transaction.state.log.num.partitions": "10",
            "share.coordinator.state.topic.replication.factor": str(replication),
            "share.coordinator.state.topic.min.isr": str(min_isr),
            "group.initial.rebalance.delay.ms": "0",
            "num.network.threads": "2",
            "num.io.threads": "2",
            "num.recovery.threads.per.data.dir": "1",
            "background.threads": "4",
            "log.segment.bytes": str(64 * 1024 * 1024),
            # Notice a crashed broker within seconds instead of the 9 s/30 s defaults.
            "broker.heartbeat.interval.ms": "1000",
            "broker.session.timeout.ms": "4000",
            "replica.lag.time.max.ms": "10000",
        }
        if node.secure_port is not None and self.secure_protocol is not None:
            props.update(self._secure_properties())
            props["listeners"] += f",SECURE://127.0.0.1:{node.secure_port}"
            props["advertised.listeners"] += f",SECURE://127.0.0.1:{node.secure_port}"
            props["listener.security.protocol.map"] += f",SECURE:{self.secure_protocol}"
        props.update(self._extra)
        return props

    def _secure_properties(self) -> dict[str, str]:
        """The second client listener: SCRAM users live in the cluster metadata (see `_scram_args`), PLAIN users
        in the listener's JAAS line; TLS from PEM files."""
        prefix = "listener.name.secure."
        props: dict[str, str] = {}
        if self._sasl_users:
            scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            plain_users = " ".join(f'user_{name}="{password}"' for name, password in self._sasl_users.items())
            props |= {
                f"{prefix}sasl.enabled.mechanisms": ",".join(SASL_MECHANISMS),
                f"{prefix}scram-sha-512.sasl.jaas.config": scram,
                f"{prefix}scram-sha-256.sasl.jaas.config": scram,
                f"{prefix}plain.sasl.jaas.config": "org.apache.kafka.common.security.plain.PlainLoginModule "
                f"required {plain_users};",
            }
        if self._tls is not None:
            props |= {
                f"{prefix}ssl.keystore.type": "PEM",
                f"{prefix}ssl.keystore.location": str(Path(self._tls.keystore).resolve()),
                f"{prefix}ssl.truststore.type": "PEM",
                f"{prefix}ssl.truststore.location": str(Path(self._tls.truststore).resolve()),
                f"{prefix}ssl.client.auth": "required" if self._tls.client_auth else "none",
            }
        return props

    def _scram_args(self) -> list[str]:
        """StorageTool arguments creating every SASL user's SCRAM credentials."""
        args: list[str] = []
        for name, password in self._sasl_users.items():
            for mechanism in ("SCRAM-SHA-512", "SCRAM-SHA-256"):
                args += ["--add-scram", f'{mechanism}=[name={name},password="{password}"]']
        return args

    def _render_properties(self, node: _Node) -> str:
        return "".join(f"{key}={value}\n" for key, value in self._server_properties(node).items())

    def _java_command(self, main_class: str, *args: str, heap: str, jvm_options: tuple[str, ...] = ()) -> list[str]:
        assert self._java is not None and self._libs is not None and self._workdir is not None
        return [
            self._java,
            *jvm_options,
            f"-Xmx{heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:InitiatingHeapOccupancyPercent=35",
            "-XX:+ExplicitGCInvokesConcurrent",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self._workdir / 'log4j2.properties'}",
            "-cp",
            str(self._libs / "*"),
            main_class,
            *args,
        ]

    def _format_storage(self, deadline: float) -> None:
        """Format every node's log directory with one shared cluster id.

        Only the first node is formatted by Kafka's StorageTool (one JVM start); the
        others get a copy of its node-independent ``bootstrap.checkpoint`` plus their own
        ``meta.properties``.  Unexpected StorageTool output falls back to formatting
        each node with the tool.
        """
        cluster_id = _new_cluster_id()
        first, rest = self._nodes[0], self._nodes[1:]
        self._run_storage_tool([first], cluster_id, deadline)
        if not rest:
            return
        meta = _read_properties(first.data_dir / "meta.properties")
        layout = sorted(p.name for p in first.data_dir.iterdir())
        if layout != ["bootstrap.checkpoint", "meta.properties"] or meta != {
            "version": "1",
            "cluster.id": cluster_id,
            "node.id": str(first.node_id),
            "directory.id": meta.get("directory.id", ""),
        }:
            self._run_storage_tool(rest, cluster_id, deadline)
            return
        for node in rest:
            node.data_dir.mkdir(parents=True, exist_ok=True)
            shutil.copy2(first.data_dir / "bootstrap.checkpoint", node.data_dir / "bootstrap.checkpoint")
            (node.data_dir / "meta.properties").write_text(
                f"version=1\ncluster.id={cluster_id}\nnode.id={node.node_id}\ndirectory.id={_new_cluster_id()}\n"
            )

    def _run_storage_tool(self, nodes: list[_Node], cluster_id: str, deadline: float) -> None:
        procs: list[tuple[_Node, subprocess.Popen[bytes]]] = []
        try:
            for node in nodes:
                cmd = self._java_command(
                    "kafka.tools.StorageTool",
                    "format",
                    "-t",
                    cluster_id,
                    "-c",
                    str(node.properties_file),
                    *self._scram_args(),
                    heap="256m",
                    jvm_options=self._shared_archive_options(),
                )
                with (node.directory / "format.log").open("wb") as out:
                    procs.append((node, self._popen(cmd, out)))
            for node, proc in procs:
                remaining = max(1.0, deadline - time.monotonic())
                try:
                    code = proc.wait(timeout=remaining)
                except subprocess.TimeoutExpired:
                    raise HarnessError(f"formatting storage of node {node.node_id} timed out") from None
                if code != 0:
                    output = (node.directory / "format.log").read_text(errors="replace")[-3000:]
                    raise HarnessError(f"formatting storage of node {node.node_id} failed:\n{output}")
        finally:
            for _, proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()

    def _popen(self, cmd: list[str], out: Any) -> subprocess.Popen[bytes]:
        if self._spawner is None:
            self._spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kafka-spawner")
        setup = die_with_parent(os.getpid())

        def spawn() -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self._workdir,
                start_new_session=True,
                preexec_fn=setup,
            )

        return self._spawner.submit(spawn).result()

    # Loading the broker's classes from a class-data-sharing (CDS) archive roughly halves
    # JVM startup.  The first node of a cluster records the archive when it exits; later
    # starts map it.  A damaged archive can crash the JVM, so an archive is only put in
    # place, and only used, after a ``-Xshare:on`` check run.

    def _cds_archive(self) -> Path:
        """Class-data-sharing archive of the broker classes for this Java runtime."""
        assert self._java is not None and self._libs is not None
        java = Path(self._java).resolve()
        stat = java.stat()
        key = hashlib.sha256(f"{java}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
        return self._libs.parent / f"broker-{key}.jsa"

    def _archive_usable(self, archive: Path) -> bool:
        assert self._java is not None and self._libs is not None
        cmd = [self._java, "-Xshare:on", f"-XX:SharedArchiveFile={archive}", "-cp", str(self._libs / "*"), "-version"]
        try:
            result = subprocess.run(cmd, cwd=self._workdir, capture_output=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return False
        return result.returncode == 0

    def _shared_archive_options(self) -> tuple[str, ...]:
        if self._archive_ok is None:
            archive = self._cds_archive()
            self._archive_ok = archive.is_file() and self._archive_usable(archive)
            if not self._archive_ok:
                archive.unlink(missing_ok=True)
        return (f"-XX:SharedArchiveFile={self._cds_archive()}",) if self._archive_ok else ()

    def _cds_options(self, node: _Node) -> tuple[str, ...]:
        shared = self._shared_archive_options()
        if shared or any(n.cds_dump is not None for n in self._nodes):
            return shared
        archive = self._cds_archive()
        _remove_abandoned_files(archive.parent.glob(f"{archive.name}.*.tmp"), archive.name)
        node.cds_dump = archive.with_name(f"{archive.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
        return (f"-XX:ArchiveClassesAtExit={node.cds_dump}",)

    def _finish_cds_dump(self, node: _Node, returncode: int) -> None:
        dump, node.cds_dump = node.cds_dump, None
        if dump is None:
            return
        try:
            if returncode != -signal.SIGKILL and dump.is_file() and self._archive_usable(dump):
                os.replace(dump, self._cds_archive())
        except OSError:
            pass
        finally:
            dump.unlink(missing_ok=True)

    def _launch(self, node: _Node) -> None:
        cmd = self._java_command(
            "kafka.Kafka", str(node.properties_file), heap=self._heap, jvm_options=self._cds_options(node)
        )
        with node.log_file.open("ab") as out:
            out.write(f"---- starting node {node.node_id} at {time.strftime('%H:%M:%S')}\n".encode())
            out.flush()
            node.process = self._popen(cmd, out)

    def _wait_ready(self, deadline: float, nodes: list[_Node], *, full_check: bool) -> None:
        expected = {n.node_id for n in self._nodes if n.alive() or n in nodes}
        self._check_alive(nodes)
        _run_in_thread(functools.partial(self._await_ready, deadline, nodes, expected, full_check))

    async def _await_ready(self, deadline: float, nodes: list[_Node], expected: set[int], full_check: bool) -> None:
        """Repeat the readiness probe until it passes, a node exits, or the deadline."""
        last_error: BaseException | None = None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                tails = "\n".join(f"--- node {n.node_id} log tail:\n{n.log_tail()}" for n in nodes)
                raise HarnessError(f"Kafka cluster not ready within the timeout (last error: {last_error!r})\n{tails}")
            probe = asyncio.create_task(self._probe(nodes, expected, full_check, min(remaining, 10.0)))
            # Watch the JVMs while probing: a node that failed to bind its port exits at once,
            # while the probe may be stuck talking to whatever owns that port.
            while not probe.done() and not any(n.process is not None and n.process.poll() is not None for n in nodes):
                await asyncio.wait([probe], timeout=0.1)
            if not probe.done():
                probe.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await probe
            elif probe.exception() is None:
                return
            else:
                last_error = probe.exception()
            self._check_alive(nodes)
            await asyncio.sleep(min(0.25, max(0.0, deadline - time.monotonic())))

    def _check_alive(self, nodes: list[_Node]) -> None:
        for node in nodes:
            if node.process is not None and node.process.poll() is not None:
                tail = node.log_tail()
                if "Address already in use" in tail or "BindException" in tail:
                    raise _PortTaken
                raise HarnessError(f"Kafka node {node.node_id} exited with code {node.process.returncode}:\n{tail}")

    async def _probe(self, nodes: list[_Node], expected: set[int], full_check: bool, budget: float) -> None:
        # Imported lazily: aiokafka is only needed once a cluster actually runs.
        from aiokafka import AIOKafkaProducer
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic
        from aiokafka.client import AIOKafkaClient

        async with asyncio.timeout(budget):
            # Plain TCP first: aiokafka logs an error for every refused connection.
            for node in nodes:
                _, writer = await asyncio.open_connection("127.0.0.1", node.port)
                writer.close()
                await writer.wait_closed()
            # Every node must serve metadata listing all live brokers (itself included).
            for node in nodes:
                client = AIOKafkaClient(bootstrap_servers=f"127.0.0.1:{node.port}", request_timeout_ms=5000)
                try:
                    await client.bootstrap()
                    seen = {broker.nodeId for broker in client.cluster.brokers()}
                finally:
                    await client.close()
                if not expected <= seen:
                    raise HarnessError(f"node {node.node_id} sees brokers {sorted(seen)}")
            if not full_check:
                return
            bootstrap = ",".join(f"127.0.0.1:{n.port}" for n in nodes)
            admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
            await admin.start()
            try:
                topic = NewTopic(_READY_TOPIC, 1, min(3, self._brokers))
                response = await admin.create_topics([topic], timeout_ms=5000)
                for entry in response.topic_errors:
                    if entry[1] not in (0, 36):  # 36: TOPIC_ALREADY_EXISTS
                        raise HarnessError(f"creating {entry[0]} failed with error code {entry[1]}")
                # Creates __consumer_offsets, so the first consumer group does not wait for it.
                await admin.find_coordinator(_READY_GROUP)
            finally:
                await admin.close()
            producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", request_timeout_ms=5000)
            await producer.start()
            try:
                await producer.send_and_wait(_READY_TOPIC, b"ready")
            finally:
                await producer.stop()

    def _signal(self, node: _Node, signum: int) -> None:
        if node.process is not None and node.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                node.process.send_signal(signum)

    def _reap(self, node: _Node, deadline: float) -> None:
        proc = node.process
        if proc is None:
            return
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()
        node.process = None
        self._finish_cds_dump(node, proc.returncode)

    def _kill_all(self) -> None:
        for node in self._nodes:
            self._signal(node, signal.SIGKILL)
        for node in self._nodes:
            self._reap(node, time.monotonic() + _STOP_TIMEOUT)


# --------------------------------------------------------------------------- CLI


class _StopRequested(Exception):
    """Raised in the main thread when SIGINT or SIGTERM arrives."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _StopRequested(signum)


@contextlib.contextmanager
def _signals_raise() -> Iterator[None]:
    previous = {sig: signal.signal(sig, _raise_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            if handler is not None:
                signal.signal(sig, handler)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="dev-broker",
        description="Run a local Apache Kafka cluster (KRaft) on 127.0.0.1 until interrupted.",
    )
    parser.add_argument("--brokers", type=int, default=1, help="number of broker+controller nodes (default 1)")
    parser.add_argument("--partitions", type=int, default=3, help="partitions of auto-created topics (default 3)")
    parser.add_argument(
        "--port", type=int, default=None, help="client port of the first broker (next brokers: +1, +2, ...)"
    )
    parser.add_argument(
        "--workdir", type=Path, default=None, help="keep configs, data and logs here (default: temporary)"
    )
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="seconds to wait for the cluster to start (default 120)"
    )
    parser.add_argument(
        "--sasl-user",
        action="append",
        default=[],
        metavar="NAME:PASSWORD",
        help="also open a SASL_PLAINTEXT listener accepting this user (SCRAM-SHA-512/256, PLAIN); repeatable",
    )
    parser.add_argument(
        "--fetch-only",
        action="store_true",
        help="only download the Kafka jars into the cache (needs mvn), then exit",
    )
    args = parser.parse_args(argv)
    if args.brokers < 1:
        parser.error("--brokers must be at least 1")
    if args.partitions < 1:
        parser.error("--partitions must be at least 1")
    users: dict[str, str] = {}
    for item in args.sasl_user:
        name, sep, password = item.partition(":")
        if not sep or not _SASL_TEXT.fullmatch(name) or not _SASL_TEXT.fullmatch(password):
            parser.error("--sasl-user takes NAME:PASSWORD, each 1-128 letters, digits or ._~@%+-")
        users[name] = password
    args.sasl_users = users
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``dev-broker`` command.

    Starts a cluster, prints ``bootstrap servers: ...`` and one line per broker, then
    runs until SIGINT/SIGTERM and stops the cluster.  Returns 0 after a requested stop,
    1 if the cluster failed to start or a broker died.  ``--fetch-only`` just makes sure
    the Kafka jars are in the cache.
    """
    args = _parse_args(argv)
    if args.fetch_only:
        try:
            libs = ensure_kafka()
        except HarnessError as exc:
            print(f"dev-broker: {exc}", file=sys.stderr, flush=True)
            return 1
        print(f"Kafka {KAFKA_VERSION} jars: {libs}", flush=True)
        return 0
    cluster = KafkaCluster(
        brokers=args.brokers,
        partitions=args.partitions,
        workdir=args.workdir,
        port=args.port,
        sasl_users=args.sasl_users or None,
    )
    status = 0
    with _signals_raise():
        try:
            print(f"starting {args.brokers} Kafka {KAFKA_VERSION} broker(s)...", file=sys.stderr, flush=True)
            started = time.monotonic()
            cluster.start(timeout=args.timeout)
            print(f"bootstrap servers: {cluster.bootstrap_servers}", flush=True)
            if args.sasl_users:
                print(f"SASL_PLAINTEXT bootstrap servers: {cluster.secure_bootstrap_servers}", flush=True)
            for index, port in enumerate(cluster.broker_ports):
                print(f"broker {index + 1}: 127.0.0.1:{port} (log: {cluster.log_file(index)})", flush=True)
            print(f"workdir: {cluster.workdir}", flush=True)
            print(
                f"ready in {time.monotonic() - started:.1f}s; press Ctrl-C to stop",
                file=sys.stderr,
                flush=True,
            )
            while True:
                dead = [i for i in range(args.brokers) if not cluster.is_running(i)]
                if dead:
                    print(f"broker(s) {[i + 1 for i in dead]} exited unexpectedly", file=sys.stderr, flush=True)
                    status = 1
                    break
                time.sleep(1.0)
        except _StopRequested:
            pass
        except HarnessError as exc:
            print(f"dev-broker: {exc}", file=sys.stderr, flush=True)
            status = 1
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            cluster.stop()
    if status == 0:
        print("stopped", file=sys.stderr, flush=True)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
