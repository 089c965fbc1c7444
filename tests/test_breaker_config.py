"""circuit-breakers.yaml: typed parsing, overrides, and errors that name key and line."""

import pytest

from lokid.errors import ConfigError
from lokid.queue.breaker_config import parse_config

EXAMPLE = """\
defaults: {failureThreshold: 5, cooldownSeconds: 300, halfOpenAfter: 60, halfOpenRequests: 1}
overrides:
  ops-security: {failureThreshold: 3}
  biz-marketing: {failureThreshold: 10}
"""


def test_the_reference_example_parses_with_overrides_over_defaults():
    configs = parse_config(EXAMPLE)
    assert configs.for_type("ops-security").failure_threshold == 3
    assert configs.for_type("ops-security").cooldown_seconds == 300
    assert configs.for_type("biz-marketing").failure_threshold == 10
    assert configs.for_type("eng-backend").failure_threshold == 5


def test_an_empty_file_means_the_defaults():
    cfg = parse_config("").for_type("anything")
    assert (cfg.failure_threshold, cfg.cooldown_seconds, cfg.half_open_after) == (5, 300, 60)
    assert cfg.half_open_requests == 1


def test_an_unknown_key_is_rejected_naming_key_and_line():
    text = "defaults:\n  failureThreshold: 5\n  failureTreshold: 3\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    assert "failureTreshold" in str(info.value) and "line 3" in str(info.value)


def test_a_wrong_type_is_rejected_naming_key_and_line():
    text = "overrides:\n  eng:\n    cooldownSeconds: 5\n    failureThreshold: lots\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    message = str(info.value)
    assert "failureThreshold" in message and "line 4" in message


def test_out_of_range_values_are_rejected():
    with pytest.raises(ConfigError, match="halfOpenRequests"):
        parse_config("defaults: {halfOpenRequests: 0}\n")


def test_broken_yaml_is_rejected():
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_config("defaults: [unclosed\n")
