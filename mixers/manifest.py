"""The manifest: what a mixture was asked to be, what it is, and how sure we are of its content.

Written next to the shards as ``manifest.json`` (plus a Hugging Face dataset-card snippet), so
anyone holding the data can audit it: the spec and its hash, per-source counts in and out,
requested vs achieved shares, the estimated true synthetic share with a 95% interval, and a
sha256 for every shard.

The manifest is a function of the spec and the inputs only: two builds of the same spec from
the same inputs write the same ``manifest.json``, byte for byte, wherever and whenever they run.
The facts of one run (where it wrote, when, how long it took, on which host) are kept apart in
``run.json`` (:class:`RunFacts`), so that comparing two mixtures is comparing two files.
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from provenance.atomic import atomic_path
from provenance.version import tool_version

Z95 = 1.959963984540054


@dataclass
class SyntheticShare:
    """Running estimate of the true synthetic share of the written documents.

    Each document contributes its ``prov_score`` (P(synthetic)) as a Bernoulli probability; the
    variance of the total is the Poisson-binomial sum of p(1 - p). Documents with no score (no
    evidence either way) cannot be estimated, so the interval's bounds count them as all human
    (low) and all synthetic (high); the point estimate leaves them out.
    """

    n: int = 0
    scored: int = 0
    sum_p: float = 0.0
    sum_var: float = 0.0

    def add(self, scores: pa.Array | pa.ChunkedArray) -> None:
        """Count the ``prov_score`` column of some written documents (nulls: unscored)."""
        p = pc.cast(scores, pa.float64())
        self.n += len(p)
        scored = len(p) - p.null_count
        if scored:
            self.scored += scored
            self.sum_p += pc.sum(p).as_py()
            self.sum_var += pc.sum(pc.multiply(p, pc.subtract(1.0, p))).as_py()

    def as_dict(self) -> dict[str, Any]:
        if self.n == 0:
            return {"estimate": None, "low": None, "high": None, "unscored_documents": 0}
        unscored = self.n - self.scored
        sd = math.sqrt(self.sum_var)
        estimate = self.sum_p / self.scored if self.scored else None
        low = max(0.0, (self.sum_p - Z95 * sd) / self.n)
        high = min(1.0, (self.sum_p + Z95 * sd + unscored) / self.n)
        return {
            "estimate": None if estimate is None else round(estimate, 6),
            "low": round(low, 6),
            "high": round(high, 6),
            "confidence": 0.95,
            "unscored_documents": unscored,
            "method": "sum of prov_score (Poisson-binomial normal interval); unscored documents "
            "bound the interval at 0 and 1",
        }


@dataclass
class RunFacts:
    """Where, when and how long one build ran: ``run.json``, beside ``manifest.json``.

    Kept out of the manifest so that the manifest depends on the spec and the inputs only.

    Examples
    --------
    >>> facts = RunFacts(out_dir="/data/mix", seconds=1.5, engine="local")
    >>> sorted(facts.as_dict())
    ['dry_run', 'engine', 'host', 'out_dir', 'seconds', 'started']
    """

    out_dir: str | None = None
    dry_run: bool = False
    engine: str = "local"
    #: When the build started, UTC, ISO 8601 to the second.
    started: str = field(
        default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    seconds: float = 0.0
    host: str = field(default_factory=socket.gethostname)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def write(self, out_dir: str | os.PathLike) -> Path:
        path = Path(out_dir) / "run.json"
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(self.as_dict(), indent=2) + "\n")
        return path


@dataclass
class Manifest:
    """Everything a reader of the mixture needs to trust it; a function of spec and inputs.

    ``run`` holds the facts of the build that made it (:class:`RunFacts`); they are written to
    ``run.json``, not to ``manifest.json``.
    """

    spec: dict[str, Any]
    spec_hash: str
    plan: dict[str, Any]
    sources: dict[str, dict[str, Any]]
    requested: dict[str, Any]
    achieved: dict[str, Any]
    synthetic_share: dict[str, Any]
    dedup: dict[str, Any]
    rejects: dict[str, Any]
    # Layout of the shards (see mixers.shards); None when nothing was written (dry run).
    shard_format: int | None = None
    shards: list[dict[str, Any]] = field(default_factory=list)
    tool_version: str = field(default_factory=tool_version)
    run: RunFacts = field(default_factory=RunFacts, compare=False)

    @property
    def seconds(self) -> float:
        """How long the build took (a fact of the run: :attr:`run`)."""
        return self.run.seconds

    @property
    def out_dir(self) -> str | None:
        """Where the build wrote (a fact of the run: :attr:`run`)."""
        return self.run.out_dir

    @property
    def dry_run(self) -> bool:
        """Whether the build only planned (a fact of the run: :attr:`run`)."""
        return self.run.dry_run

    def as_dict(self) -> dict[str, Any]:
        """What ``manifest.json`` holds: everything but the run's facts."""
        out = asdict(self)
        out.pop("run")
        return out

    def write(self, out_dir: str | os.PathLike) -> Path:
        path = Path(out_dir) / "manifest.json"
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(self.as_dict(), indent=2, sort_keys=False) + "\n")
        return path

    def dataset_card(self) -> str:
        """A Hugging Face dataset-card YAML header describing the mixture's provenance."""
        creators = []
        if self.achieved.get("documents_by_pool", {}).get("original") or self.achieved.get(
            "documents_by_pool", {}
        ).get("scraped"):
            creators.append("found")
        if self.achieved.get("documents_by_pool", {}).get("synthetic"):
            creators.append("machine-generated")
        share = self.synthetic_share
        lines = ["---", "language_creators:"] + [f"- {c}" for c in creators]
        lines += ["source_datasets:"] + [f"- {name}" for name in self.sources]
        lines += [
            "tags:",
            "- tailguard-mixture",
            "---",
            "",
            f"Built by tailguard {self.tool_version} from spec `{self.spec_hash[:12]}`: "
            f"{self.achieved.get('documents', 0):,} documents, requested synthetic share "
            f"{self.requested.get('synthetic_ratio')}, achieved "
            f"{self.achieved.get('synthetic_share')}; estimated true synthetic share "
            f"{share.get('estimate')} (95% interval {share.get('low')}-{share.get('high')}).",
        ]
        return "\n".join(lines) + "\n"

    def write_card(self, out_dir: str | os.PathLike) -> Path:
        path = Path(out_dir) / "dataset_card.md"
        with atomic_path(path) as tmp:
            tmp.write_text(self.dataset_card())
        return path


def read_manifest(out_dir: str | os.PathLike) -> dict[str, Any]:
    """The manifest of a built mixture, as written."""
    return json.loads((Path(out_dir) / "manifest.json").read_text())


def verify_shards(out_dir: str | os.PathLike) -> list[str]:
    """Problems found when checking every shard against the manifest's sha256 and row count.

    An empty list means the mixture on disk is exactly the one the manifest describes.
    """
    import hashlib

    import pyarrow.parquet as pq

    out = Path(out_dir)
    problems = []
    for shard in read_manifest(out)["shards"]:
        path = out / shard["file"]
        if not path.exists():
            problems.append(f"{shard['file']}: missing")
            continue
        if hashlib.sha256(path.read_bytes()).hexdigest() != shard["sha256"]:
            problems.append(f"{shard['file']}: sha256 differs from the manifest")
        elif pq.ParquetFile(path).metadata.num_rows != shard["rows"]:
            problems.append(f"{shard['file']}: row count differs from the manifest")
    return problems


def mixture_files(out_dir: str | os.PathLike, *, verify: bool = True) -> list[Path]:
    """The shard files of a built mixture in the manifest's order, checked against the
    manifest first (sha256 and row count): a folder changed since it was built is refused with
    one line naming what differs, never read as the mixture."""
    from provenance.errors import InputError

    out = Path(out_dir)
    if verify:
        problems = verify_shards(out)
        if problems:
            raise InputError(f"mixture does not match its manifest: {'; '.join(problems)}",
                             file=str(out))
    return [out / s["file"] for s in read_manifest(out)["shards"]]


def load_mixture(out_dir: str | os.PathLike, *, verify: bool = True) -> Any:
    """A built mixture as a ``datasets.Dataset`` (shards checked against the manifest first)."""
    import datasets

    return datasets.Dataset.from_parquet([str(p) for p in mixture_files(out_dir,
                                                                         verify=verify)])


def mixture_frame(out_dir: str | os.PathLike, *, verify: bool = True) -> Any:
    """A built mixture as one polars DataFrame (shards checked against the manifest first):
    for pipelines that stay in polars, as the LM family's training sets do."""
    import polars as pl

    return pl.read_parquet(mixture_files(out_dir, verify=verify))
