"""A new kind of evidence is one Signal subclass plus one registration, and nothing else.

This file registers a toy kind, ``marker`` (documents that contain a marker string are
synthetic), and shows it tagging through ``tag_corpus`` (on this process and on Ray) and through
the ``tailguard tag`` option it declares, without any other file knowing it. The registry's own
rules (names, orders and options that are taken) and the built-in kinds' order are checked too.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from cli import main
from provenance.errors import ConfigError
from provenance.fusion import TagOptions, build_signals
from provenance.ledger import Ledger
from provenance.registry import (
    SignalOption,
    register_signal,
    signal_kinds,
    signal_options,
    unregister_signal,
)
from provenance.schema import Evidence, Label, Tag
from provenance.signals import Signal
from provenance.tagger import tag_corpus

MARKER = "<<generated>>"


class MarkerSignal(Signal):
    """Calls documents that contain ``marker`` synthetic (a stand-in for a real kind)."""

    evidence = "marker"

    def __init__(self, marker: str) -> None:
        super().__init__()
        self.marker = marker

    def examine(self, batch: pl.DataFrame, text_field: str) -> list[Tag | None]:
        return [Tag(Label.SYNTHETIC, 1.0, self.evidence, detail={"marker": self.marker})
                if self.marker in text else None for text in batch[text_field]]


def build_marker(values: dict) -> MarkerSignal | None:
    return MarkerSignal(values["marker"]) if values["marker"] else None


@pytest.fixture
def marker_kind() -> Iterator[None]:
    """The toy kind, registered between ledger_near (400) and the detector (500)."""
    register_signal(
        "marker", order=450, build=build_marker,
        options=[SignalOption("marker", str, "Call documents that contain this text synthetic.")],
    )
    yield
    unregister_signal("marker")


@pytest.fixture
def crawl(tmp_path: Path) -> dict:
    """Documents with and without the marker; one declared human and one in the ledger, both
    with the marker, which the more reliable evidence decides."""
    generated = f"a model wrote this answer {MARKER} about tails"
    with Ledger(tmp_path / "ledger.sqlite") as ledger:
        ledger.register([generated], generator="gen-model", generation=1)
    rows = [
        {"id": "plain", "text": "a human note about the weather"},
        {"id": "marked", "text": f"an answer {MARKER} from some model"},
        {"id": "declared", "text": f"a quote of {MARKER} in an essay", "is_synthetic": False},
        {"id": "in-ledger", "text": generated},
    ]
    path = tmp_path / "crawl.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return {"path": path, "ledger": tmp_path / "ledger.sqlite", "root": tmp_path}


def evidence_by_id(path: Path) -> dict[str, tuple[str, str]]:
    frame = pl.read_parquet(path)
    return {row["id"]: (row["prov_evidence"], row["prov_label"])
            for row in frame.iter_rows(named=True)}


EXPECTED = {"plain": ("none", "unknown"), "marked": ("marker", "synthetic"),
            "declared": ("declared", "human"), "in-ledger": ("ledger_exact", "synthetic")}


def test_a_registered_kind_tags_through_tag_corpus_in_its_fusion_place(
    marker_kind: None, crawl: dict
) -> None:
    out = crawl["root"] / "tagged.parquet"
    report = tag_corpus(crawl["path"], out, ledger=crawl["ledger"], marker=MARKER)
    assert evidence_by_id(out) == EXPECTED
    detail = pl.read_parquet(out).filter(pl.col("id") == "marked")["prov_detail"][0]
    assert json.loads(detail) == {"marker": MARKER}
    assert report.by_evidence == {"declared": 1, "ledger_exact": 1, "marker": 1, "none": 1}
    # Asked after ledger_near: only what the declared and ledger kinds left undecided.
    assert list(report.signals) == ["declared", "ledger_exact", "ledger_near", "marker"]
    assert report.signals["marker"]["examined"] == 2
    # Off unless its option is given, like every kind.
    off = tag_corpus(crawl["path"], crawl["root"] / "off.parquet", ledger=crawl["ledger"])
    assert "marker" not in off.by_evidence and "marker" not in off.signals


def test_the_tag_command_has_the_option_the_kind_declares(marker_kind: None, crawl: dict
                                                          ) -> None:
    runner = CliRunner()
    help_text = runner.invoke(main, ["tag", "--help"]).stdout
    assert "--marker TEXT" in help_text and "Call documents that contain this text" in help_text
    out = crawl["root"] / "cli.parquet"
    result = runner.invoke(main, ["tag", str(crawl["path"]), "-o", str(out), "--ledger",
                                  str(crawl["ledger"]), "--marker", MARKER, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["by_evidence"]["marker"] == 1
    assert evidence_by_id(out) == EXPECTED


def test_an_unregistered_kind_is_gone_everywhere(crawl: dict) -> None:
    assert "marker" not in signal_options()
    with pytest.raises(ConfigError, match="unknown tagging option 'marker'; the evidence options "
                       "are ledger, declared, near_threshold, watermark, detector"):
        tag_corpus(crawl["path"], crawl["root"] / "t.parquet", marker=MARKER)
    result = CliRunner().invoke(main, ["tag", str(crawl["path"]), "-o",
                                       str(crawl["root"] / "t.parquet"), "--marker", MARKER])
    assert result.exit_code == 2 and "No such option '--marker'" in result.stderr


def test_ray_workers_build_the_kind_from_the_runs_options(
    marker_kind: None, crawl: dict, ray_local
) -> None:
    """The workers' own registry has only the built-in kinds: the run's options carry its kinds
    (this module's code travels by value, as a plugin installed on every node would be there)."""
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        out = crawl["root"] / "ray.parquet"
        tag_corpus(crawl["path"], out, ledger=crawl["ledger"], marker=MARKER, engine="ray")
    finally:
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert evidence_by_id(out) == EXPECTED


def test_the_built_in_kinds_keep_the_evidence_order() -> None:
    builtin = [e.value for e in Evidence if e is not Evidence.NONE]
    assert [kind.name for kind in signal_kinds()] == builtin
    assert list(TagOptions.create().evidence) == list(signal_options())


@pytest.mark.parametrize(("name", "order", "option", "message"), [
    ("declared", 450, "marker", "evidence kind 'declared' is already registered"),
    ("none", 450, "marker", "a name other than 'none'"),
    ("marker", 400, "marker", "order 400 is taken by 'ledger_near'"),
    ("marker", 450, "ledger", "option name 'ledger' is taken"),
    ("marker", 450, "batch_size", "option name 'batch_size' is taken"),
])
def test_names_orders_and_options_are_registered_once(name: str, order: float, option: str,
                                                      message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        register_signal(name, order=order, build=build_marker, options=[SignalOption(option)])
    assert "marker" not in {kind.name for kind in signal_kinds()}


def test_a_kind_must_build_signals_of_its_own_evidence(marker_kind: None) -> None:
    register_signal("wrong", order=460, build=lambda values: MarkerSignal("x"))
    try:
        with pytest.raises(ConfigError, match="evidence kind 'wrong' built a signal of kind "
                           "'marker'"):
            build_signals(declared=None)
    finally:
        unregister_signal("wrong")
