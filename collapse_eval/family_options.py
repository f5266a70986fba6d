"""A setting a collapse family declares, once, for the command line and ``--config`` files."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FamilyOption:
    """A setting a family declares: it becomes ``--NAME`` of ``tailguard collapse run``
    (shared by the families that declare the same name) and a key of a ``--config`` file.

    ``kind`` is ``int``, ``float``, ``str``, ``choice`` (one of ``choices``) or ``pairs``
    (repeatable ``KEY=VALUE``, a dict).
    """

    name: str
    kind: str
    help: str
    minimum: float | None = None
    choices: tuple[str, ...] = ()
    #: exclusive bounds (``minimum`` itself not allowed)
    open_minimum: bool = False
    #: the command-line flag without its dashes, when it is not the name with dashes
    cli_flag: str | None = None

    @property
    def flag(self) -> str:
        """The flag without dashes, e.g. ``max-train-docs`` for ``max_train_docs``.

        >>> FamilyOption("max_train_docs", "int", "").flag
        'max-train-docs'
        """
        return self.cli_flag or self.name.replace("_", "-")
