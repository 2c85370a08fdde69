"""A sweep's overrides → its jobs: the one expansion, Hydra's basic sweeper's own.

Three places need a multirun's jobs before or without running them, and all three expand them here:

    hydra_plugins/ired_sweeper   at launch, inside Hydra's own sweep: records them (jobs_record.py)
    compose.py                   before Hydra runs: composes every job, to refuse a bad one in one line
    sweep.py                     a sweep dir without that record: again, from its multirun.yaml

The basic sweeper takes the sweeper's params (a preset's grid) first, then the command line's
overrides, so that a key on the command line replaces a preset's (BasicSweeper.sweep: arguments);
parses them (parse) and crosses every list of values in that order (jobs, batches). Parsing glob(...)
needs Hydra's config loader, which only a composing Hydra has: multirun.yaml alone expands every
form but glob. The recording sweeper gets its overrides already parsed by BasicSweeper.sweep, so it
shares the refusal and the split, not the order and the parse, which Hydra does there itself.

parse is also how ired-eval reads its overrides, so that they are in ired-train's grammar.

Hydra's parser and basic sweeper are internals, pinned by hydra-core<1.4; they are imported inside
the functions, so that reading a sweep's states stays light.
"""

from __future__ import annotations


def arguments(params: dict, task: list) -> list[str]:
    """The sweep's overrides in the basic sweeper's order: hydra.sweeper.params, then the shell's."""
    return [f"{k}={v}" for k, v in params.items()] + list(task)


def parse(overrides: list[str], config_loader=None) -> list:
    """Hydra's parsed overrides (Override objects); glob(...) only with a config loader. Raises
    Hydra's OverrideParseException for a line that is no override."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create(config_loader=config_loader).parse_overrides(overrides)


def not_a_list_of_values(overrides: list) -> str | None:
    """Why the basic sweeper cannot run these parsed overrides (an interval: Hydra's own refusal is a
    traceback), or None. One message for compose's check and the recording sweeper's."""
    for override in overrides:
        if override.is_sweep_override() and not override.is_discrete_sweep():
            return (
                f"{override.input_line}: the basic sweeper runs lists of values (a,b,c; range(); glob(); "
                "choice(); sort(); shuffle()), not an interval, which only a sampling sweeper draws from"
            )
    return None


def batches(overrides: list, max_batch_size: int | None) -> list[list[list[str]]]:
    """The jobs of these parsed overrides in Hydra's job order, in the launchers' batches of at most
    `max_batch_size` (None: one batch). Raises HydraException for an interval."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    return BasicSweeper.split_arguments(overrides, max_batch_size)


def jobs(overrides: list) -> list[list[str]]:
    """Every job of these parsed overrides, in Hydra's job order: each its list of overrides."""
    return batches(overrides, max_batch_size=None)[0]
