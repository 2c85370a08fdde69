"""The command line composed once before Hydra runs the app, so that a config Hydra cannot compose
is refused in one line (`<key>: <what is wrong; what is allowed>`) instead of Hydra's own
multi-line message and exit 1.

    check_command_line(sys.argv[1:])     # raises ConfigError; ired-train's main() prints it

A single run's overrides are composed as Hydra will compose them. A multirun's are expanded as
Hydra's basic sweeper expands them (ired_mining.expansion, with Hydra's config loader: presets'
grids, range, glob and choice are covered) and every job is composed, as the launchers will, before
any job starts. Each composed config is then held against
the schema (schema.py): Hydra lets `+key=value` add a key that no schema declares, and `~key` delete
a top-level one, so those are caught here. Values in range are checks.check_ranges's job, per run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import typing

from omegaconf import DictConfig, ListConfig, OmegaConf

from ired_mining import expansion
from ired_mining.checks import ConfigError
from ired_mining.choices import Choice

CONFIG_MODULE = "ired_mining.conf"
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


# ================================================================ composing


def check_command_line(argv: list[str], config_name: str = "config") -> DictConfig | None:
    """Compose what `ired-train ARGV` will run; raise ConfigError with one line if Hydra or the
    schema refuses it. Leaves alone what it cannot judge the way Hydra will (another config
    directory, shell completion) and HYDRA_FULL_ERROR=1 runs: Hydra reports those itself.
    Returns the composed config of a single run (not of --cfg, --info, --help or a multirun)."""
    from hydra._internal.utils import get_args_parser

    usage = io.StringIO()
    try:
        with contextlib.redirect_stderr(usage):
            args = get_args_parser().parse_args(argv)
    except SystemExit as exit_:
        if exit_.code == 0:  # --version printed
            return None
        message = usage.getvalue().strip().splitlines()[-1].partition("error: ")[2]
        raise ConfigError(f"{message}; options such as -m go before the overrides, see ired-train --help") from None
    modes = [
        flag
        for flag, on in (
            ("--run", args.run),
            ("-m/--multirun", args.multirun),
            ("--cfg", args.cfg),
            ("--info", args.info),
        )
        if on
    ]
    if len(modes) > 1:  # Hydra's own refusal is a traceback
        raise ConfigError(
            f"{' and '.join(modes)}: choose one of them (ired-train --cfg job shows a single run's "
            "config; a multirun's jobs are listed in <sweep dir>/jobs.expected.json)"
        )
    if args.shell_completion or args.config_path or args.config_dir or os.environ.get("HYDRA_FULL_ERROR") == "1":
        return None  # HYDRA_FULL_ERROR=1: a developer asked for Hydra's own report with its traceback
    try:
        composed = _compose_all(args.overrides, args.multirun, args.config_name or config_name)
    except ConfigError:
        raise
    except Exception as err:  # Hydra and OmegaConf raise many types; each becomes one line
        raise ConfigError(explain(err)) from None
    runs = not (args.multirun or args.cfg or args.info or args.help or args.hydra_help)
    return composed if runs else None


def planned_run_dir(cfg: DictConfig) -> tuple[str, str | None] | None:
    """The directory a single run will write to, as (path, pin): `pin` is the override that makes
    Hydra use this very path when the configured one is computed (the default
    outputs/${now:...}/... would resolve again, a second later, to another directory). None when
    the path cannot be resolved before Hydra runs (it names Hydra's runtime)."""
    try:
        raw = cfg.hydra.run._get_node("dir")._value()
        path = str(OmegaConf.select(cfg, "hydra.run.dir", throw_on_resolution_failure=True))
    except Exception:
        return None
    if "${" not in str(raw):
        return path, None
    quoted = path.replace("\\", "\\\\").replace("'", "\\'")
    return path, f"hydra.run.dir='{quoted}'"


def _compose_all(overrides: list[str], multirun: bool, config_name: str) -> DictConfig | None:
    # Hydra's config loader is an internal, pinned by hydra-core<1.4 (as in expansion.py).
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode
    from hydra.utils import get_class

    with initialize_config_module(CONFIG_MODULE, version_base="1.3", job_name="train"):
        loader = GlobalHydra.instance().config_loader()
        parsed = expansion.parse(overrides, config_loader=loader)
        if refusal := not_an_option(loader, parsed) or (None if multirun else a_sweep_without_m(parsed)):
            raise ConfigError(refusal)
        if not multirun:
            with naming_refused_overrides(loader, config_name, overrides, RunMode.RUN):
                cfg = loader.load_configuration(config_name, overrides, run_mode=RunMode.RUN)
            check_against_schema(cfg)
            check_run_dir(cfg)
            return cfg
        with naming_refused_overrides(loader, config_name, overrides, RunMode.MULTIRUN):
            master = loader.load_configuration(config_name, overrides, run_mode=RunMode.MULTIRUN)
        task = [o.input_line for o in parsed if not o.is_hydra_override()]
        # By name: Hydra's plugin scan may load the basic sweeper's module twice, so that a subclass
        # (ired-train's recording sweeper) derives from another copy of the class.
        lineage = {f"{k.__module__}.{k.__qualname__}" for k in get_class(master.hydra.sweeper._target_).__mro__}
        if BASIC_SWEEPER not in lineage:
            return None  # another sweeper expands its own way; its jobs are composed when it runs them
        params = dict((master.hydra.sweeper.get("params") or {}).items())
        sweep = expansion.parse(expansion.arguments(params, task), config_loader=loader)
        if refusal := expansion.not_a_list_of_values(sweep):
            raise ConfigError(refusal)
        # Unresolved, as Hydra reads them: an override may hold an interpolation of a job's own value
        # (hydra.sweep.subdir=job_${hydra.job.num}), which the master config cannot resolve.
        hydra_overrides = OmegaConf.to_container(master.hydra.overrides.hydra, resolve=False)
        for job in expansion.jobs(sweep):
            # load_sweep_config composes the master's Hydra overrides, then the job's, as a single run
            with naming_refused_overrides(loader, config_name, [*hydra_overrides, *job], RunMode.RUN):
                job_cfg = loader.load_sweep_config(master, job)
            check_against_schema(job_cfg)
        return None


@contextlib.contextmanager
def naming_refused_overrides(loader, config_name: str, overrides: list[str], run_mode):
    """Around Hydra's composition of `overrides`: its refusal of a key override, which carries no
    fields, becomes a ConfigError naming the override (refused_override); any other error passes."""
    from hydra.errors import ConfigCompositionException, MissingConfigException

    try:
        yield
    except ConfigCompositionException as err:
        if not isinstance(err, MissingConfigException) and (
            why := refused_override(loader, config_name, overrides, run_mode)
        ):
            raise ConfigError(why) from None
        raise


def refused_override(loader, config_name: str, overrides: list[str], run_mode) -> str | None:
    """Why Hydra refuses one of these overrides of a key, or None if it refuses none of them.

    Hydra (1.3) refuses `+key=v` on a key that is set, `~key` on one that is not (or, with an
    OmegaConf error below it, on a schema's field), and `key@pkg=v` on a key that is no group, with a
    message and no fields. So the key overrides are applied again as Hydra applies them, by its own
    function and one at a time, onto the config their group overrides compose; the first one refused
    is known by its kind (`is_add`, `is_delete`, `package`) and by what the config holds at its key."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.errors import ConfigCompositionException
    from omegaconf.errors import ConfigTypeError, OmegaConfBaseException

    parsed = expansion.parse(overrides, config_loader=loader)
    # Hydra's own split (defaults_list.Overrides): an override of a group picks an option and is
    # applied while composing; any other sets a key afterwards.
    on_keys = [
        o
        for o in parsed
        if not o.is_sweep_override()
        and (isinstance(o.value(), dict) or not loader.repository.group_exists(o.key_or_group))
    ]
    try:
        cfg = loader.load_configuration(
            config_name, [o.input_line for o in parsed if o not in on_keys], run_mode=run_mode
        )
    except Exception:
        return None  # the groups alone do not compose: that error is Hydra's own, with its fields
    for override in on_keys:
        key = override.key_or_group
        try:
            held = OmegaConf.select(cfg, key, throw_on_missing=False) is not None
        except OmegaConfBaseException:  # a key below a value (seed.x): Hydra refuses it with fields
            held = False
        try:
            ConfigLoaderImpl._apply_overrides_to_config([override], cfg)
        except ConfigCompositionException as err:
            on_a_schema = any(isinstance(e, ConfigTypeError) for e in _chain(err))
            if override.package is not None:
                return f"{key}: no such config group (in {override.input_line}); see ired-train --help for the groups"
            if override.is_add() and held:
                return already_set(key)
            if override.is_delete() and not held:
                return f"{key}: not a key, so it cannot be deleted"
            if override.is_delete() and on_a_schema:
                return f"{key}: required, cannot be deleted; set it instead, e.g. {key}=VALUE"
            return None  # another error, with the fields explain() reads
    return None


def already_set(key: str) -> str:
    """The refusal of `+key=value` on a key the config holds (ired-train's, and ired-eval's)."""
    return f"{key}: already set; override it without the + ({key}=VALUE)"


def _chain(err: BaseException) -> list[BaseException]:
    """The error and the ones it was raised from or during, outermost first."""
    chain, cause = [], err
    while cause is not None:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    return chain


def check_run_dir(cfg: DictConfig) -> None:
    """A single run's directory its filesystem cannot make is refused here, in one line; a sweep's job
    directories are checked by the recording sweeper, which alone knows their names."""
    from pathlib import Path

    from ired_mining.jobs_record import unmakeable

    try:
        run_dir = Path(str(cfg.hydra.run.dir))
    except Exception:  # a resolver that only a running Hydra app has: Hydra makes it, or says why
        return
    if why := unmakeable(run_dir):
        raise ConfigError(f"hydra.run.dir: the run directory cannot be made: {why}; choose a shorter one")


def not_an_option(loader, overrides) -> str | None:
    """Why a group override names no option (`logger=null`: Hydra's own refusal names neither the
    group nor its options), or None."""
    for override in overrides:
        group = override.key_or_group
        if override.is_sweep_override() or override.is_delete() or not loader.repository.group_exists(group):
            continue
        if not isinstance(override.value(), (str, list, dict)):
            options = loader.get_group_options(group)
            return (
                f"{group}: {override.input_line.partition('=')[2] or 'nothing'} is not an option; choose one of: "
                f"{', '.join(options)}"
            )
    return None


def a_sweep_without_m(overrides) -> str | None:
    """Why a single run cannot take these parsed overrides (a sweep, which needs -m), or None: read
    off the parsed overrides, as Hydra's own check does, since its refusal is a message without fields."""
    from hydra.core.override_parser.types import ValueType

    for override in overrides:
        if override.is_sweep_override():
            line = override.input_line
            key = line.partition("=")[0]
            if override.value_type == ValueType.SIMPLE_CHOICE_SWEEP:  # a,b: a list or a sweep, Hydra asks
                return f"{key}: {line} sweeps over values, which needs -m (ired-train -m ...); for a list write {key}=[...]"
            return f"{key}: {line} is a sweep, which needs -m (ired-train -m ...)"
    return None


def check_against_schema(cfg: DictConfig) -> None:
    """Every node typed by a schema dataclass holds exactly that dataclass's fields (the root's
    `hydra` apart), and the values outside `hydra` resolve. Raises ConfigError."""
    _check_node(cfg, "")
    for key in cfg:
        if key == "hydra":
            continue
        try:
            node = cfg._get_node(key)
            OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else cfg[key]
        except Exception as err:
            raise ConfigError(explain(err)) from None


def _check_node(node, path: str) -> None:
    if isinstance(node, ListConfig):
        return
    schema = OmegaConf.get_type(node)
    if dataclasses.is_dataclass(schema):
        fields = [f.name for f in dataclasses.fields(schema)]
        where = path or "the config"
        if "name" in node and isinstance(node._get_node("name")._value(), str):
            where += f" ({node.name})"  # e.g. mining (none): the option chosen decides its keys
        for key in node:
            if key not in fields and not (key == "hydra" and not path):
                raise ConfigError(
                    f"{path + '.' if path else ''}{key}: not a key of {where}; its keys: {', '.join(fields)}"
                )
        for key in fields:
            if key not in node:
                raise ConfigError(
                    f"{path + '.' if path else ''}{key}: required, cannot be deleted; "
                    f"set it instead, e.g. {path + '.' if path else ''}{key}=VALUE"
                )
    for key in node:
        if key == "hydra" and not path:
            continue  # Hydra's own config, typed by Hydra
        child = node._get_node(key)
        if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
            _check_node(child, f"{path}.{key}" if path else str(key))


# ================================================================ one line for each error


def explain(err: BaseException) -> str:
    """`<key>: <what is wrong; what is allowed>` for an error Hydra or OmegaConf raised while
    composing; the innermost OmegaConf error names the key best."""
    from hydra.errors import MissingConfigException, OverrideParseException
    from omegaconf.errors import (
        ConfigAttributeError,
        ConfigKeyError,
        InterpolationResolutionError,
        ValidationError,
    )

    if isinstance(err, MissingConfigException) and err.missing_cfg_file and "/" in err.missing_cfg_file:
        group, _, option = err.missing_cfg_file.rpartition("/")
        return f"{group}: no option {option!r}; choose one of: {', '.join(err.options or ())}"
    if isinstance(err, OverrideParseException):
        return (
            f"{err.override}: not an override ({err.message.strip().splitlines()[0]}); write key=value, "
            f"group=option, or a sweep such as key=a,b with -m"
        )
    for e in _chain(err):  # the outermost OmegaConf error that names a key
        key = getattr(e, "full_key", None)
        if not key:
            continue
        if isinstance(e, ValidationError) and (choice := _choice_at(e)):
            value = "null" if e.value is None else e.value
            return f"{key}={value} is invalid; it must be {choice.allowed()}"
        if isinstance(e, ValidationError):
            return f"{key}: {_got(e)}; it must be {_expected(e)}"
        if isinstance(e, (ConfigKeyError, ConfigAttributeError)):
            return f"{key}: not a key of {_where(e, key)}; {_keys_of(e, key)}"
        if isinstance(e, InterpolationResolutionError):
            return f"{key}: does not resolve ({str(e).splitlines()[0]})"
    # No field to read (Hydra's refusals of an override of a key are named by refused_override
    # before this, and a sweep without -m by a_sweep_without_m): Hydra's own words, on one line.
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return "; ".join(lines[:3]) or type(err).__name__


def _where(e, full_key: str) -> str:
    where = full_key.rpartition(".")[0] or "the config"
    parent = getattr(e, "parent_node", None)
    if isinstance(parent, DictConfig) and isinstance(parent.get("name"), str):
        where += f" ({parent.name})"
    return where


def _keys_of(e, full_key: str) -> str:
    schema = getattr(e, "object_type", None)
    if dataclasses.is_dataclass(schema):
        return f"its keys: {', '.join(f.name for f in dataclasses.fields(schema))}"
    return f"to add a new entry write +{full_key}=VALUE"


def _got(e) -> str:
    return "got null" if e.value is None else f"got {str(e.value)!r}"


def _choice_at(e) -> type[Choice] | None:
    """The Choice the schema types the failing key with, or None."""
    schema, key = getattr(e, "object_type", None), str(getattr(e, "key", "") or "")
    hint = typing.get_type_hints(schema).get(key) if dataclasses.is_dataclass(schema) and key else None
    return hint if isinstance(hint, type) and issubclass(hint, Choice) else None


def _expected(e) -> str:
    """What the schema allows at the failing key: from the field's type in its dataclass, or from
    the element type of a typed list or dict."""
    schema = getattr(e, "object_type", None)
    key = str(getattr(e, "key", "") or "")
    if dataclasses.is_dataclass(schema) and key:
        hint = typing.get_type_hints(schema).get(key)
        if hint is not None:
            return _describe(hint)
    ref = getattr(e, "ref_type", None) or getattr(e, "object_type", None)
    args = typing.get_args(ref) if ref is not None else ()
    return _describe(args[-1]) if args else "a value of the key's type"


def _describe(hint) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union and type(None) in args:
        inner = [a for a in args if a is not type(None)]
        return f"{_describe(inner[0])} or null"
    if origin is list:
        return f"a list of {_plural(args[0])}" if args else "a list"
    if origin is dict:
        return f"a mapping of names to {_plural(args[1])}" if args else "a mapping"
    if isinstance(hint, type) and issubclass(hint, Choice):
        return hint.allowed()
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(hint, str(hint))


def _plural(hint) -> str:
    return {int: "integers", float: "numbers", bool: "booleans", str: "strings"}.get(hint, "values")
