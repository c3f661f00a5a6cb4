"""The one parser of each config value kind: booleans, numbers, seconds, sizes, ports, durations."""

import math

import pytest

from gateway.config import parse
from gateway.errors import ConfigError


@pytest.mark.parametrize("value, expected", [
    (True, True), (False, False), (None, False), ("true", True), ("TRUE", True), ("1", True), ("on", True),
    ("false", False), ("False", False), ("0", False), ("no", False), ("off", False), (" off ", False)])
def test_bool(value, expected):
    assert parse.as_bool(value, "k") is expected


@pytest.mark.parametrize("value", ["yes", "maybe", "", 1, 0, 1.0, [True], {"a": 1}])
def test_bool_refuses_anything_else_naming_the_key(value):
    with pytest.raises(ConfigError, match=r"^a\.b: must be true or false$"):
        parse.as_bool(value, "a.b")


def test_bool_default_for_none():
    assert parse.as_bool(None, "k", default=True) is True


@pytest.mark.parametrize("value", ["10", True, False, math.nan, -1, 0, [1]])
def test_positive_seconds_are_yaml_numbers_above_zero(value):
    with pytest.raises(ConfigError, match=r"^t: must be a positive number of seconds$"):
        parse.as_seconds(value, "t")


def test_seconds_bounds_and_default():
    assert parse.as_seconds(None, "t", 300.0) == 300.0
    assert parse.as_seconds(5, "t") == 5.0 and isinstance(parse.as_seconds(5, "t"), float)
    assert parse.as_seconds(0, "t", minimum=0) == 0.0
    with pytest.raises(ConfigError, match=r"^t: must be a number of seconds > 0 and <= 10$"):
        parse.as_seconds(11, "t", maximum=10)


def test_whole_numbers_and_sizes():
    assert parse.as_number(3, "n", above=0, whole=True) == 3
    with pytest.raises(ConfigError, match=r"^n: must be a positive whole number$"):
        parse.as_number(2.5, "n", above=0, whole=True)
    assert parse.as_size_mb(None, "s", 32) == 32 * 1024 * 1024
    assert parse.as_size_mb(0.5, "s", 32) == 512 * 1024


@pytest.mark.parametrize("value, expected", [(6379, 6379), ("6380", 6380), (" 1 ", 1), (None, None)])
def test_port_takes_digits_from_an_environment_reference(value, expected):
    assert parse.as_port(value, "p") == expected


@pytest.mark.parametrize("value", [0, 65536, "http", "6379.0", True, 6379.0])
def test_port_refuses_the_rest(value):
    with pytest.raises(ConfigError, match=r"^p: must be a port number"):
        parse.as_port(value, "p")


@pytest.mark.parametrize("text, seconds", [("30s", 30), ("5 min", 300), ("2h", 7200), ("30d", 2592000),
                                           ("1w", 604800), ("never", None)])
def test_durations(text, seconds):
    assert parse.duration_seconds(text) == seconds
    assert parse.as_duration(text, "d", "1h") == text


@pytest.mark.parametrize("value", ["soon", "30", 30, "30y", "Never"])
def test_bad_durations(value):
    with pytest.raises(ConfigError, match=r"^d: must look like 30s"):
        parse.as_duration(value, "d", "1h")


def test_durations_past_a_century_say_never():
    with pytest.raises(ConfigError, match=r"^d: longer than 100 years"):
        parse.as_duration("40000d", "d", "1h")


def test_text_treats_an_empty_value_as_unset():
    assert parse.as_text("", "t", "default") == "default"
    with pytest.raises(ConfigError, match=r"^t: must be a string$"):
        parse.as_text(5, "t")
    assert parse.as_secret(1234, "p") == "1234"


def test_resolve_env_lists_every_missing_variable():
    assert parse.resolve_env({"a": ["os.environ/X"]}, environ={"X": "1"}) == {"a": ["1"]}
    with pytest.raises(ConfigError) as info:
        parse.resolve_env({"a": "os.environ/M1", "b": [{"c": "os.environ/M2"}]}, environ={})
    assert str(info.value).splitlines() == ["a: environment variable M1 is not set",
                                            "b[0].c: environment variable M2 is not set"]
