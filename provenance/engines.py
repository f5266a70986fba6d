"""Where tagging and mixing run: in this process (``local``) or on a Ray cluster (``ray``).

An engine only decides how the work is spread; what a document is, how it is tagged and which
rows a mixture takes are the same on every engine, so the same input gives the same output.
:func:`resolve_engine` turns the ``engine=`` / ``ray_address=`` arguments of the public
functions into ``None`` (local) or a :class:`RayEngine`; :func:`ray_session` connects to (or
starts) Ray for one call. Ray is an optional dependency (``pip install "tailguard[ray]"``) and is
imported only here, on the Ray path.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from provenance.errors import ConfigError

ENGINES = ("local", "ray")
RAY_INSTALL_HINT = 'the ray engine needs Ray: install tailguard[ray] (pip install "tailguard[ray]")'


@dataclass(frozen=True)
class RayEngine:
    """Run on Ray.

    Parameters
    ----------
    address : str, optional
        The cluster to connect to (``"auto"`` for the one ``ray start`` runs on this machine,
        ``"ray://host:10001"`` for a remote one). ``None``: the Ray this process already
        initialised, else a new local Ray on this machine, shut down after the call.
    workers : int, optional
        Parallel workers (tagging actors, mixing tasks). Default: one per CPU of the cluster
        (one per GPU for GPU tagging actors), at most one per input shard.
    num_gpus : float, optional
        GPUs per tagging actor. Default: 1 when a detector or watermark is used and the
        cluster has GPUs, else 0.
    init_options : dict
        Extra ``ray.init`` arguments, used only when the engine starts Ray itself.

    Examples
    --------
    >>> resolve_engine("ray", ray_address="auto")
    RayEngine(address='auto', workers=None, num_gpus=None, init_options={})
    >>> resolve_engine("local") is None
    True
    """

    address: str | None = None
    workers: int | None = None
    num_gpus: float | None = None
    init_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.workers is not None and (
            isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1
        ):
            raise ConfigError(f"workers must be a positive integer, got {self.workers!r}")
        if self.num_gpus is not None and not self.num_gpus >= 0:
            raise ConfigError(f"num_gpus must be >= 0, got {self.num_gpus!r}")


def resolve_engine(engine: str | RayEngine | None, ray_address: str | None = None
                   ) -> RayEngine | None:
    """``None`` for the local engine, a :class:`RayEngine` for Ray (validated here, once)."""
    if isinstance(engine, RayEngine):
        if ray_address is not None and engine.address not in (None, ray_address):
            raise ConfigError(
                f"ray_address {ray_address!r} differs from the engine's address "
                f"{engine.address!r}; give one of them"
            )
        return engine if ray_address is None else RayEngine(
            ray_address, engine.workers, engine.num_gpus, dict(engine.init_options))
    if engine is None or engine == "local":
        if ray_address is not None:
            raise ConfigError("ray_address is only used with engine='ray' (--engine ray)")
        return None
    if engine == "ray":
        return RayEngine(address=ray_address)
    raise ConfigError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")


def import_ray() -> Any:
    """The ``ray`` module with Ray Data, or a :class:`ConfigError` that says how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401  (the [data] extra)
    except ImportError as exc:
        raise ConfigError(f"{RAY_INSTALL_HINT} ({exc})") from None
    return ray


@contextlib.contextmanager
def ray_session(engine: RayEngine, *, progress: bool = False) -> Iterator[Any]:
    """Ray, connected for the duration of one call, with ordered, quiet Ray Data execution.

    Uses the Ray this process already initialised; otherwise connects to ``engine.address`` (or
    starts a local Ray) and shuts it down on exit. Ray Data keeps the order of its inputs (the
    output files are written in input order, as by the local engine) and shows its progress
    bars only with ``progress``.
    """
    ray = import_ray()
    with warnings.catch_warnings():
        # Ray Data's copies of its context touch its own deprecated settings.
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"ray\.")
        started = False
        if not ray.is_initialized():
            options = {"include_dashboard": False, "logging_level": logging.WARNING,
                       **engine.init_options}
            try:
                ray.init(address=engine.address, **options)
            except ConnectionError as exc:
                raise ConfigError(f"cannot connect to Ray at {engine.address!r}: {exc}") from None
            started = True
        context = ray.data.DataContext.get_current()
        settings = {"enable_progress_bars": progress, "print_on_execution_start": False}
        saved = {name: getattr(context, name) for name in settings if hasattr(context, name)}
        preserve_order = context.execution_options.preserve_order
        data_logger = logging.getLogger("ray.data")
        level = data_logger.level
        for name in saved:
            setattr(context, name, settings[name])
        context.execution_options.preserve_order = True
        if not progress:
            # Ray Data logs each execution and that its progress bars are off.
            data_logger.setLevel(logging.ERROR)
        try:
            yield ray
        finally:
            for name, value in saved.items():
                setattr(context, name, value)
            context.execution_options.preserve_order = preserve_order
            data_logger.setLevel(level)
            if started:
                ray.shutdown()


def cluster_workers(ray: Any, engine: RayEngine, units: int, gpus_each: float = 0.0) -> int:
    """How many workers to run: the engine's choice, else what the cluster has room for."""
    if engine.workers is not None:
        wanted = engine.workers
    else:
        resources = ray.cluster_resources()
        if gpus_each > 0:
            wanted = int(resources.get("GPU", 0) // gpus_each)
        else:
            wanted = int(resources.get("CPU", 1))
    return max(1, min(wanted, max(units, 1)))


__all__ = ["ENGINES", "RayEngine", "import_ray", "ray_session", "resolve_engine"]
