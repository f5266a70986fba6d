"""Build a mixture on the engine of your choice: ``local`` (this process) or ``ray``.

:func:`build_mixture_with` is :func:`~mixers.build.build_mixture` with ``engine=`` and
``ray_address=``; both engines write the same shards, byte for byte (see
:mod:`mixers.ray_build`).
"""

from __future__ import annotations

import os
from typing import Any

from mixers.build import build_mixture
from mixers.manifest import Manifest
from mixers.spec import MixtureSpec
from provenance.engines import RayEngine, resolve_engine


def build_mixture_with(
    spec: MixtureSpec,
    out_dir: str | os.PathLike | None = None,
    *,
    engine: str | RayEngine = "local",
    ray_address: str | None = None,
    dry_run: bool = False,
    overwrite: bool = False,
    progress: bool = False,
) -> Manifest:
    """:func:`~mixers.build.build_mixture` on ``engine`` (``"local"``, ``"ray"`` or a
    :class:`~provenance.engines.RayEngine`); ``ray_address`` picks the Ray cluster.

    Examples
    --------
    >>> import polars as pl
    >>> from mixers.spec import MixtureSpec, Source
    >>> docs = pl.DataFrame({"id": ["a", "b", "c"], "text": ["one", "two", "three"]})
    >>> spec = MixtureSpec(sources=(Source(docs, "human", name="docs"),), target_docs=2)
    >>> build_mixture_with(spec, dry_run=True).plan["pools"]["original"]["take_docs"]
    2
    """
    ray_engine = resolve_engine(engine, ray_address)
    options: dict[str, Any] = {"dry_run": dry_run, "overwrite": overwrite, "progress": progress}
    if ray_engine is None:
        return build_mixture(spec, out_dir, **options)
    from mixers.ray_build import build_mixture_ray

    return build_mixture_ray(spec, out_dir, engine=ray_engine, **options)


__all__ = ["build_mixture_with"]
