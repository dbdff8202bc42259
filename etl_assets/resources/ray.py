"""Ray for the ingestion fan-out: a local Ray sized to this process's CPUs, or an existing cluster.

Built on dagster-ray's `RayResource`, so a KubeRay resource from that library can
be bound in its place. Its default `connect` is replaced because it also
configures Ray Data with a remote task (not used here, and a second of start-up
per run), and it would shut down a Ray that the caller had already started.
"""

import socket
from typing import Any
from urllib.parse import urlsplit

from dagster_ray import RayResource
from pydantic import Field, PrivateAttr

from etl_assets.resources.cpu import usable_cpu_count


# Ray 2.60 retries an unreachable GCS address (host:port) for about 14 minutes before it raises.
PROBE_TIMEOUT_SECONDS = 10


LOCAL_START_ATTEMPTS = 3


class RayClusterUnreachable(ConnectionError):
    pass


def probe_address(address: str) -> None:
    """Fail fast when a `host:port` or `ray://host:port` address accepts no TCP connection."""
    if address in ("auto", "local"):
        return
    parts = urlsplit(address if "://" in address else f"ray://{address}")
    if parts.hostname is None or parts.port is None:
        return
    try:
        socket.create_connection((parts.hostname, parts.port), timeout=PROBE_TIMEOUT_SECONDS).close()
    except OSError as error:
        raise RayClusterUnreachable(
            f"could not connect to the Ray cluster at {address} ({error.strerror or error}); "
            "start it with `ray start --head`, fix the address, or leave it empty for a local Ray"
        ) from None


class RayCluster(RayResource):
    """Local Ray when `address` is empty; otherwise joins the cluster at that address."""

    address: str | None = Field(
        default=None,
        description="Ray address to join: 'auto' for a cluster started on this machine with `ray start`, "
        "or ray://host:10001 for Ray Client. Empty starts a local Ray for the run.",
    )
    num_cpus: int | None = Field(
        default=None,
        description="CPUs of the local Ray. Defaults to the CPUs this process may use (affinity and cgroup quota). "
        "Ignored when joining a cluster.",
    )

    _started_here: bool = PrivateAttr(default=False)

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def ray_address(self) -> str | None:  # type: ignore[override]
        return self.address or None

    @property
    def name(self) -> str:
        return f"Ray cluster at {self.address}" if self.address else "local Ray"

    @property
    def created(self) -> bool:
        return True

    @property
    def ready(self) -> bool:
        return True

    def connect(self, context: Any) -> Any:
        import ray

        if ray.is_initialized():
            # A Ray started by the caller (a test session, a notebook) is reused and left running.
            context.log.info("Reusing the Ray already initialised in this process")
            return None

        options: dict[str, Any] = {"include_dashboard": False, "logging_level": "WARNING", **self.ray_init_options}
        if self.address:
            probe_address(self.address)
        else:
            options.setdefault("num_cpus", self.num_cpus or usable_cpu_count())
        try:
            self._context = self._init_ray(context, options)
        except ConnectionError as error:
            raise RayClusterUnreachable(
                f"could not connect to the Ray cluster at {self.address} ({error}); "
                "start it with `ray start --head`, fix the address, or leave it empty for a local Ray"
            ) from None
        self._started_here = True

        cpus = int(ray.cluster_resources().get("CPU", 0))
        context.log.info(f"Connected to {self.name} with {cpus} CPUs")
        return self._context

    def _init_ray(self, context: Any, options: dict[str, Any]) -> Any:
        import ray

        for attempt in range(1, LOCAL_START_ATTEMPTS + 1):
            try:
                return ray.init(address=self.ray_address, **options)
            except Exception as error:
                # Ray 2.60 gives a new local node a fixed 30 s to register, which a loaded machine can miss.
                if self.address or "timed out during startup" not in str(error) or attempt == LOCAL_START_ATTEMPTS:
                    raise
                context.log.warning(f"Local Ray did not start in time (attempt {attempt}); starting it again")
                ray.shutdown()

    def on_connect(self, context: Any) -> None:
        # dagster-ray's message names Ray Client, which a local Ray does not use; connect() logs instead.
        pass

    def cleanup(self, context: Any, exception: BaseException | None) -> None:
        # Only the Ray connection this resource opened is closed; an external cluster keeps running.
        if self._started_here:
            import ray

            ray.shutdown()
            self._started_here = False
            self._context = None
            context.log.info(f"Disconnected from {self.name}")
