"""A real Docker engine and registry for the container tests (and the benchmark).

No Docker Hub here, and none is needed: when no engine answers, this starts Debian's
`dockerd` as root on a private socket, data root and exec root (no bridge, no iptables: the
test containers need no network and the host's networking stays untouched), and Debian's
`docker-registry` on 127.0.0.1. The Loki Mode image is a busybox-static root filesystem
whose `loki` entrypoint prints its arguments, writes into `/workspace/.loki` and exits when
`/workspace/.loki/STOP` appears; each `publish()` imports a fresh build (a new image id)
and pushes it as `<registry>/asklokesh/loki-mode:latest`, so pulls and prunes run for real.

The Debian packages come from `scripts/install-system-deps.sh` (run by `make test`; run here
too when missing and root).
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from support import Lokid, wait_until

ROOT = Path(__file__).resolve().parent.parent
REPOSITORY = "asklokesh/loki-mode"
DECOY_REPOSITORY = "someone/decoy"
LOOKALIKE_REPOSITORY = "asklokesh/loki-mode-extra"  # a prefix of ours must not match

LOKI_SCRIPT = """#!/bin/sh
trap 'echo "loki: terminated"; exit 143' TERM INT
echo "loki args: $*"
mkdir -p /workspace/.loki
echo "$*" > /workspace/.loki/container-args
echo "build: $(cat /etc/loki-build)"
if [ -n "$LOKI_IGNORE_STOP" ]; then  # a run that never looks at STOP (mid-iteration)
    while true; do sleep 0.05; done
fi
while [ ! -f /workspace/.loki/STOP ]; do sleep 0.05; done
echo "loki: STOP seen"
rm -f /workspace/.loki/STOP
exit "$(cat /workspace/.loki/EXIT_CODE 2>/dev/null || echo 0)"
"""
CHANGES = ['ENTRYPOINT ["/usr/local/bin/loki"]', 'CMD ["start"]', "WORKDIR /workspace"]


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def engine_answers(host: str) -> bool:
    try:
        client = docker.DockerClient(base_url=host, version="auto", timeout=5)
    except docker.errors.DockerException:
        return False
    try:
        return bool(client.ping())
    except Exception:
        return False
    finally:
        client.close()


def rootfs_tar(build: str) -> bytes:
    """A busybox-static root filesystem with the fake `loki`; `build` tells builds apart."""
    busybox = Path("/bin/busybox").read_bytes()
    applets = subprocess.run(
        ["/bin/busybox", "--list"], check=True, capture_output=True, text=True
    ).stdout.split()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:

        def add(name: str, data: bytes | None = None, mode: int = 0o755, link: str = "") -> None:
            info = tarfile.TarInfo(name)
            info.mtime = 0
            info.mode = mode
            if link:
                info.type, info.linkname = tarfile.SYMTYPE, link
            elif data is None:
                info.type = tarfile.DIRTYPE
            else:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)

        for folder in ("bin", "etc", "tmp", "usr", "usr/local", "usr/local/bin", "workspace"):
            add(folder)
        add("bin/busybox", busybox)
        for applet in applets:
            if applet != "busybox":
                add(f"bin/{applet}", link="busybox")
        add("usr/local/bin/loki", LOKI_SCRIPT.encode())
        add("etc/loki-build", f"{build}\n".encode(), 0o644)
    return buf.getvalue()


class DockerEnv:
    """The engine (ours or one already running) and our registry."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="lkd-", dir="/tmp"))
        self.host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        self.own_engine = False
        self.dockerd: subprocess.Popen[bytes] | None = None
        self.registry: subprocess.Popen[bytes] | None = None
        self.registry_port = 0
        self._client: docker.DockerClient | None = None
        self._builds = 0

    # -- bring-up -------------------------------------------------------------------

    def start(self) -> DockerEnv:
        _ensure_packages()
        if not engine_answers(self.host):
            self.host = f"unix://{self.dir}/docker.sock"
            self.own_engine = True
            self.start_engine()
        self.start_registry()
        return self

    def _dockerd_cmd(self) -> list[str]:
        d = self.dir
        return [
            _binary("dockerd") or "dockerd",
            f"--host={self.host}",
            f"--data-root={d}/data",
            f"--exec-root={d}/exec",
            f"--pidfile={d}/docker.pid",
            "--bridge=none",
            "--iptables=false",
            "--log-level=warn",
        ]

    def start_engine(self) -> None:
        assert self.own_engine, "only an engine these tests started may be restarted"
        log = open(self.dir / "dockerd.log", "ab")  # noqa: SIM115 - handed to the child
        # dockerd finds containerd and runc on PATH; Debian puts runc in /usr/sbin.
        path = os.environ.get("PATH", "/usr/bin:/bin") + ":/usr/sbin:/sbin"
        self.dockerd = subprocess.Popen(
            self._dockerd_cmd(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env={**os.environ, "PATH": path},
        )
        log.close()
        try:
            _wait(lambda: self._engine_up_or_dead(), 60, f"dockerd on {self.host}")
        except RuntimeError:
            raise RuntimeError(f"dockerd did not start:\n{self.engine_log()}") from None
        if self.dockerd.poll() is not None:
            raise RuntimeError(f"dockerd exited:\n{self.engine_log()}")
        self._client = None

    def _engine_up_or_dead(self) -> bool:
        return (self.dockerd is not None and self.dockerd.poll() is not None) or engine_answers(
            self.host
        )

    def stop_engine(self) -> None:
        """SIGTERM our dockerd and wait: it stops its containers first, as on a real host."""
        assert self.own_engine and self.dockerd is not None
        self.dockerd.send_signal(signal.SIGTERM)
        self.dockerd.wait(60)
        self.dockerd = None
        if self._client is not None:
            self._client.close()
            self._client = None

    def engine_log(self) -> str:
        path = self.dir / "dockerd.log"
        return path.read_text(errors="replace")[-5000:] if path.exists() else ""

    def start_registry(self) -> None:
        self.registry_port = _free_port()
        config = self.dir / "registry.yml"
        config.write_text(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n"
            f"    rootdirectory: {self.dir}/registry\n  delete:\n    enabled: true\n"
            f"http:\n  addr: 127.0.0.1:{self.registry_port}\n"
        )
        log = open(self.dir / "registry.log", "ab")  # noqa: SIM115 - handed to the child
        self.registry = subprocess.Popen(
            [_binary("docker-registry") or "docker-registry", "serve", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        log.close()
        _wait(self._registry_answers, 30, f"docker-registry on port {self.registry_port}")

    def _registry_answers(self) -> bool:
        if self.registry is not None and self.registry.poll() is not None:
            log = (self.dir / "registry.log").read_text(errors="replace")
            raise RuntimeError(f"docker-registry exited:\n{log}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.registry_port}/v2/", timeout=2):
                return True
        except OSError:
            return False

    def close(self) -> None:
        if not self.own_engine:
            with contextlib.suppress(Exception):
                self.reset()
        for proc in (self.registry, self.dockerd):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
        if self._client is not None:
            self._client.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- images ---------------------------------------------------------------------

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            self._client = docker.DockerClient(base_url=self.host, version="auto", timeout=60)
        return self._client

    @property
    def registry_host(self) -> str:
        return f"127.0.0.1:{self.registry_port}"

    def ref(self, repository: str = REPOSITORY, tag: str = "latest") -> str:
        return f"{self.registry_host}/{repository}:{tag}"

    @property
    def image(self) -> str:
        """What LOKI_DOCKER_IMAGE names in the tests."""
        return self.ref()

    def import_build(self, ref: str) -> str:
        """A new build (new image id) imported locally as `ref`; returns its id."""
        self._builds += 1
        repository, tag = ref.rsplit(":", 1)
        api = self.client.api
        api.import_image_from_data(
            rootfs_tar(f"build-{self._builds}"), repository=repository, tag=tag, changes=CHANGES
        )
        return api.inspect_image(ref)["Id"]

    def publish(self, repository: str = REPOSITORY, tag: str = "latest") -> str:
        """Push a new build to the registry as `tag`; returns its image id.

        Local tags stay as they were (an old `:latest` pulled before keeps its tag until
        the next pull moves it, as on a user's machine): the build goes up under a staging
        tag, the registry copies the manifest to `tag`, and the staging image is dropped.
        """
        stage_tag = f"staging-{self._builds + 1}"
        staging = self.ref(repository, stage_tag)
        image_id = self.import_build(staging)
        for line in self.client.api.push(staging, stream=True, decode=True):
            if "error" in line:
                raise RuntimeError(f"push of {staging} failed: {line['error']}")
        self._retag_in_registry(repository, stage_tag, tag)
        self.client.api.remove_image(staging)
        return image_id

    def _retag_in_registry(self, repository: str, source: str, tag: str) -> None:
        base = f"http://{self.registry_host}/v2/{repository}/manifests"
        kind = "application/vnd.docker.distribution.manifest.v2+json"
        get = urllib.request.Request(f"{base}/{source}", headers={"Accept": kind})
        with urllib.request.urlopen(get, timeout=10) as reply:
            manifest, kind = reply.read(), reply.headers["Content-Type"]
        put = urllib.request.Request(
            f"{base}/{tag}", data=manifest, method="PUT", headers={"Content-Type": kind}
        )
        urllib.request.urlopen(put, timeout=10).close()

    def pull(self, ref: str) -> str:
        repository, tag = ref.rsplit(":", 1)
        self.client.api.pull(repository, tag=tag)
        return self.client.api.inspect_image(ref)["Id"]

    def image_ids(self) -> set[str]:
        return {i["Id"] for i in self.client.api.images(all=True)}

    def reset(self, containers_only: bool = False) -> None:
        """Remove every container, and the images of our registry, between tests."""
        api = self.client.api
        for c in api.containers(all=True):
            if self.own_engine or c.get("Image", "").startswith(self.registry_host):
                api.remove_container(c["Id"], force=True)
        if containers_only:
            return
        for image in api.images(all=True):
            refs = (image.get("RepoTags") or []) + (image.get("RepoDigests") or [])
            if self.own_engine or any(r.startswith(self.registry_host) for r in refs):
                with contextlib.suppress(docker.errors.APIError):
                    api.remove_image(image["Id"], force=True)


def _binary(name: str) -> str | None:
    """`name` on PATH, else in /usr/sbin (dockerd is there, and not every PATH has it)."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    return found


def _static_busybox() -> bool:
    """The image is busybox alone, so it must not need the host's shared libraries."""
    try:
        head = Path("/bin/busybox").read_bytes()[: 1 << 20]
    except OSError:
        return False
    return b"ld-linux" not in head


def _ensure_packages() -> None:
    missing = [b for b in ("dockerd", "docker-registry") if _binary(b) is None]
    if not _static_busybox():
        missing.append("busybox-static")
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip(f"needs {', '.join(missing)}: run scripts/install-system-deps.sh as root")
    subprocess.run(
        ["bash", str(ROOT / "scripts" / "install-system-deps.sh")],
        check=True,
        stdin=subprocess.DEVNULL,
    )


# -- a lokid on this engine, and what the container tests share ----------------------------

SECRET = "sk-ant-test-SECRET-0123456789"
GH_SECRET = "ghp_test_SECRET_abcdefghij"


def spawn(engine: DockerEnv, root: Path, **env: str) -> Lokid:
    home = root / "home"
    home.mkdir(exist_ok=True)
    base = {
        "DOCKER_HOST": engine.host,
        "HOME": str(home),
        "LOKI_DOCKER_IMAGE": engine.image,
        "LOKI_DOCKER_PRUNE": "1",
        "LOKID_STOP_GRACE": "5",
        "ANTHROPIC_API_KEY": SECRET,
    }
    return Lokid(root, env={**base, **env}).start()


def project(root: Path, name: str) -> str:
    """A fresh project folder (no `.loki/` yet: a run creates it)."""
    path = root / name
    path.mkdir()
    return str(path)


class Events:
    """A subscribed connection that keeps every event it reads."""

    def __init__(self, lokid: Lokid, topics: tuple[str, ...] = ("*",)) -> None:
        self.client = lokid.client()
        self.client.call("subscribe", {"topics": list(topics)})
        self.seen: list[dict[str, Any]] = []

    def wait(self, topic: str, project: str | None = None, timeout: float = 30) -> dict:
        def match() -> dict | None:
            for event in self.seen:
                if event["topic"] == topic and (project is None or event["project"] == project):
                    return event
            self._read(0.05)
            return None

        return wait_until(match, timeout, f"event {topic}")

    def _read(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            self.seen.append(self.client.next_event(timeout=timeout))

    def drain(self) -> list[dict[str, Any]]:
        self._read(0.2)
        while True:
            before = len(self.seen)
            self._read(0.05)
            if len(self.seen) == before:
                return self.seen

    def topics(self) -> list[str]:
        return [e["topic"] for e in self.seen]


def start(lokid: Lokid, path: str, **params: Any) -> dict[str, Any]:
    return lokid.call("run.start", {"project": path, **params})
