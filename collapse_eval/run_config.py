"""A collapse run's settings from a file and flags: what ``tailguard collapse run`` parses.

A run is described by plain settings -- ``policies``, ``generations``, ``seeds`` (a count,
numbered from ``first_seed``, or a list) and the options its family declares
(:mod:`collapse_eval.families`) -- read from a ``--config`` file (TOML, YAML, or the
``config.json`` a run folder holds, so a run can be repeated elsewhere) with flags on top, and
the family's defaults under both. A setting the family does not declare is one line naming it
and, where another family has it, which one.

Examples
--------
>>> config = collapse_config("gaussian", {"generations": 5, "seeds": 2, "ddof": 0})
>>> config.generations, config.seeds, config.family_options, config.samples
(5, (0, 1), {'ddof': 0}, 100)
>>> collapse_config("gmm", {"ddof": 0})
Traceback (most recent call last):
...
provenance.errors.ConfigError: ddof applies to the gaussian family only
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from collapse_eval.family_registry import FAMILIES, family_spec
from provenance.errors import ConfigError, InputError

__all__ = ["RUN_SETTINGS", "collapse_config", "read_config_file"]

#: the settings every family has
RUN_SETTINGS = ("policies", "generations", "seeds", "first_seed")


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """The settings in a ``.toml``/``.yaml`` file or a run folder's ``config.json``."""
    from mixers.spec import load_spec_file

    path = Path(path)
    if path.suffix != ".json":
        return load_spec_file(path, what="collapse config")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError("collapse config file does not exist", file=str(path)) from None
    except json.JSONDecodeError as exc:
        raise InputError(f"invalid JSON: {exc.msg}", file=str(path), line=exc.lineno) from None
    if not isinstance(data, dict):
        raise InputError("collapse config file must hold a table of fields", file=str(path))
    return data


def collapse_config(family: str | None, settings: dict[str, Any] | None = None,
                    config_file: str | os.PathLike | None = None) -> Any:
    """The config of a run of ``family`` (or the file's ``family``) from ``config_file`` with
    ``settings`` over it; ``None`` values count as not given."""
    given = read_config_file(config_file) if config_file is not None else {}
    named = given.pop("family", None)
    if family is not None and named is not None and family != named:
        raise ConfigError(f"{config_file} describes a {named} run, not {family}")
    family = family or named
    if family is None:
        raise ConfigError("name the family (gaussian, gmm, vae, lm) or give a --config file "
                          "with a family field")
    spec = family_spec(family)
    given.update({k: v for k, v in (settings or {}).items() if v is not None and v != ()})
    own = {o.name for o in spec.options}
    for name in given:
        if name in RUN_SETTINGS or name in own:
            continue
        owners = [f for f, s in FAMILIES.items() if name in {o.name for o in s.options}]
        if owners:
            who = (owners[0] if len(owners) == 1
                   else f"{', '.join(owners[:-1])} and {owners[-1]}")
            raise ConfigError(f"{name} applies to the {who} famil"
                              f"{'ies' if len(owners) > 1 else 'y'} only")
        raise ConfigError(f"{name} is not a setting of the {family} family (settings: "
                          f"{', '.join([*RUN_SETTINGS, *sorted(own)])})")
    seeds = given.pop("seeds", spec.defaults.get("seeds", 1))
    first = given.pop("first_seed", 0)
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        given["seeds"] = tuple(range(first, first + seeds))
    else:
        given["seeds"] = tuple(seeds)
    if "policies" in given:
        given["policies"] = tuple(given["policies"])
    return spec.make_config(given)
