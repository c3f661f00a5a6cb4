"""The one parser of each config value kind (bool, number, seconds, size, port, duration, os.environ/)."""

import os
import re

from gateway.errors import ConfigError

ENV_PREFIX = "os.environ/"
# Strings a boolean key accepts (any case): an os.environ/ reference always yields text. "yes" is
# not among them: the settings contract has refused `drop_params: "yes"` from the start (it names
# the key instead), and one parser cannot accept it for one key and refuse it for another.
TRUE_WORDS = frozenset({"true", "1", "on"})
FALSE_WORDS = frozenset({"false", "0", "no", "off"})
# Durations as keys take them (`30s`, `30m`, `30h`, `30d`, `2w`; "never"). LiteLLM's docs write both
# "20m" and "30min": the usual spellings of each unit are accepted.
_DURATION = re.compile(r"^(\d{1,9})\s*([a-z]+)$")
_UNITS = {**dict.fromkeys(("s", "sec", "secs", "second", "seconds"), 1),
          **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), 60),
          **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), 3600),
          **dict.fromkeys(("d", "day", "days"), 86400),
          **dict.fromkeys(("w", "wk", "week", "weeks"), 7 * 86400)}
MAX_DURATION_SECONDS = 100 * 366 * 86400
DURATION_SHAPE = "30s, 30m (30min), 30h, 30d"


def key_path(parts):
    """Render a key path as `model_list[2].litellm_params.model`."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _resolve(value, parts, missing, environ):
    if isinstance(value, dict):
        return {k: _resolve(v, parts + (k,), missing, environ) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, parts + (i,), missing, environ) for i, v in enumerate(value)]
    if isinstance(value, str) and value.startswith(ENV_PREFIX):
        name = value[len(ENV_PREFIX):]
        if name not in environ:
            missing.append(f"{key_path(parts)}: environment variable {name} is not set")
            return None
        return environ[name]
    return value


def resolve_env(tree, environ=None):
    """The tree with every `os.environ/NAME` string replaced by the variable's value; a ConfigError
    lists every variable that is not set, one line each."""
    missing = []
    resolved = _resolve(tree, (), missing, os.environ if environ is None else environ)
    if missing:
        raise ConfigError("\n".join(missing))
    return resolved


def env_references(tree, parts=()):
    """The key paths (tuples) of every `os.environ/NAME` string in a config tree: which values came
    from the environment, so a view of the config (model info) can leave them out."""
    if isinstance(tree, dict):
        return {path for k, v in tree.items() for path in env_references(v, parts + (k,))}
    if isinstance(tree, list):
        return {path for i, v in enumerate(tree) for path in env_references(v, parts + (i,))}
    return {parts} if isinstance(tree, str) and tree.startswith(ENV_PREFIX) else set()


def as_bool(value, path, default=False):
    """true/false, or the text true/1/on or false/0/no/off in any case; None is the default."""
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        word = value.strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
    raise ConfigError(f"{path}: must be true or false")


def _describe(whole, unit, above, minimum, maximum):
    kind = ("whole number" if whole else "number") + (f" of {unit}" if unit else "")
    if above == 0 and minimum is None and maximum is None:
        return f"a positive {kind}"
    bounds = [f"> {above}" if above is not None else f">= {minimum}" if minimum is not None else None,
              f"<= {maximum}" if maximum is not None else None]
    return " ".join([f"a {kind}", " and ".join(b for b in bounds if b)]).strip()


def as_number(value, path, default=None, *, above=None, minimum=None, maximum=None, whole=False, unit=None):
    """A YAML number (never a bool, never text) within the bounds given; None is the default."""
    if value is None:
        return default
    ok = isinstance(value, int) if whole else isinstance(value, (int, float))
    if (isinstance(value, bool) or not ok or value != value  # NaN is no number of anything
            or (above is not None and not value > above) or (minimum is not None and value < minimum)
            or (maximum is not None and value > maximum)):
        raise ConfigError(f"{path}: must be {_describe(whole, unit, above, minimum, maximum)}")
    return value


def as_seconds(value, path, default=None, *, above=0, minimum=None, maximum=None):
    """A number of seconds (positive unless bounds say otherwise) as a float; None is the default."""
    number = as_number(value, path, None, above=None if minimum is not None else above, minimum=minimum,
                       maximum=maximum, unit="seconds")
    return default if number is None else float(number)


def as_size_mb(value, path, default_mb):
    """A positive number of megabytes, as bytes; None is the default."""
    return int(as_number(value, path, default_mb, above=0, unit="megabytes") * 1024 * 1024)


def as_port(value, path, default=None):
    """A TCP port: a whole number or its digits as text (an os.environ/ reference); None is the default."""
    if value is None:
        return default
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ConfigError(f"{path}: must be a port number from 1 to 65535")
    return value


def as_text(value, path, default=None):
    """A string; None or "" (an empty os.environ/ variable) is the default."""
    if value is None or value == "":
        return default
    if not isinstance(value, str):
        raise ConfigError(f"{path}: must be a string")
    return value


def as_secret(value, path, default=None):
    """A password: a string (a number written without quotes is its digits); None or "" is the default."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    return as_text(value, path, default)


def duration_seconds(text):
    """`30s` / `30m` / `30h` / `30d` / `2w` as seconds, "never" as None; ValueError for anything else."""
    if text == "never":
        return None
    match = _DURATION.match(text.strip().lower()) if isinstance(text, str) else None
    if not match or match.group(2) not in _UNITS:
        raise ValueError(f"must look like {DURATION_SHAPE}, or be \"never\"")
    return int(match.group(1)) * _UNITS[match.group(2)]


def as_duration(value, path, default):
    """Duration text (`30d`, "never"), checked as a key's `duration` is; None or "" is the default."""
    if value is None or value == "":
        return default
    try:
        seconds = duration_seconds(value)
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if seconds is not None and seconds > MAX_DURATION_SECONDS:
        raise ConfigError(f"{path}: longer than 100 years; use \"never\"")
    return value


def fallback_map(value, path):
    """LiteLLM's `[{"group": ["other", ...]}]` as {group: [names]}; ConfigError names the entry at fault."""
    if value is None:
        return {}
    if not isinstance(value, list):
        raise ConfigError(f"{path}: must be a list like [{{\"gpt-4\": [\"gpt-3.5-turbo\"]}}]")
    out = {}
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise ConfigError(f"{path}[{i}]: must map a model name to a list of fallback names")
        for name, targets in item.items():
            targets = [targets] if isinstance(targets, str) else targets
            if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
                raise ConfigError(f"{path}[{i}].{name}: must be a list of model names")
            out[str(name)] = targets
    return out


def name_list(value, path):
    """A list of names (model groups); None is empty."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        raise ConfigError(f"{path}: must be a list of model names")
    return value
