"""The event type registry: 10 legacy names, 12 run-scoped ones, and a deployment's extras."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from eventsvc.types import (EVENT_TYPES, LEGACY_EVENT_TYPES, RUN_SCOPED_EVENT_TYPES, build_registry,
                            is_run_scoped)

LEGACY = ["session_created", "session_closed", "user_message", "assistant_message", "message_delta",
          "tool_call", "tool_result", "state_update", "error", "status"]
RUN = ["run_created", "run_started", "run_waiting_input", "run_resumed",
       "run_completed", "run_failed", "run_cancelled"]
VERIFY = ["verify_start", "verify_pass", "verify_fail"]
TOOL_POLICY = ["tool_policy_blocked", "tool_policy_warn"]
RUN_SCOPED = RUN + VERIFY + TOOL_POLICY


def test_legacy_types_are_exactly_the_ten_names():
    assert sorted(LEGACY_EVENT_TYPES) == sorted(LEGACY)
    assert len(LEGACY_EVENT_TYPES) == 10


def test_run_scoped_types_are_exactly_the_twelve_names():
    assert sorted(RUN_SCOPED_EVENT_TYPES) == sorted(RUN_SCOPED)
    assert len(RUN_SCOPED_EVENT_TYPES) == 12


def test_event_types_holds_all_twenty_two():
    assert sorted(EVENT_TYPES) == sorted(LEGACY + RUN_SCOPED)
    assert len(EVENT_TYPES) == 22


@pytest.mark.parametrize("name", LEGACY + RUN_SCOPED)
def test_every_builtin_name_supports_in(name):
    assert name in EVENT_TYPES


@pytest.mark.parametrize("name", ["", "bogus", "USER_MESSAGE", "run", "user_message "])
def test_unregistered_names_are_not_in_the_registry(name):
    assert name not in EVENT_TYPES
    assert name not in LEGACY_EVENT_TYPES
    assert name not in RUN_SCOPED_EVENT_TYPES


def test_legacy_and_run_scoped_sets_do_not_overlap():
    assert not set(LEGACY_EVENT_TYPES) & set(RUN_SCOPED_EVENT_TYPES)


@pytest.mark.parametrize(("names", "category"), [
    (LEGACY, "legacy"),
    (RUN, "run"),
    (VERIFY, "verify"),
    (TOOL_POLICY, "tool_policy"),
])
def test_each_type_carries_its_category(names, category):
    assert {EVENT_TYPES[name].category for name in names} == {category}
    assert all(EVENT_TYPES[name].name == name for name in names)


@pytest.mark.parametrize("name", RUN_SCOPED)
def test_run_scoped_types_are_run_scoped(name):
    assert is_run_scoped(name) is True
    assert EVENT_TYPES[name].run_scoped is True


@pytest.mark.parametrize("name", LEGACY)
def test_legacy_types_are_not_run_scoped(name):
    assert is_run_scoped(name) is False
    assert EVENT_TYPES[name].run_scoped is False


def test_unknown_name_is_not_run_scoped():
    assert is_run_scoped("no_such_type") is False


def test_build_registry_without_extras_is_the_builtin_twenty_two():
    assert sorted(build_registry()) == sorted(LEGACY + RUN_SCOPED)
    assert len(build_registry("")) == 22


def test_build_registry_adds_extra_names_as_category_extra_not_run_scoped():
    registry = build_registry("deploy_started, deploy_finished")
    assert len(registry) == 24
    for name in ("deploy_started", "deploy_finished"):
        assert name in registry
        assert registry[name].category == "extra"
        assert registry[name].run_scoped is False
        assert registry.is_run_scoped(name) is False
    # the built-ins are still all there, unchanged
    assert all(name in registry for name in LEGACY + RUN_SCOPED)
    assert registry["run_started"].run_scoped is True
    assert registry["user_message"].category == "legacy"


def test_build_registry_accepts_an_iterable_of_extra_names():
    registry = build_registry(["deploy_started"])
    assert registry["deploy_started"].category == "extra"


def test_build_registry_does_not_change_the_module_registry():
    build_registry("deploy_started")
    assert "deploy_started" not in EVENT_TYPES
    assert len(EVENT_TYPES) == 22


@pytest.mark.parametrize(("extra",), [
    ("Deploy",),            # upper case
    ("1deploy",),           # starts with a digit
    ("_deploy",),           # starts with an underscore
    ("deploy-started",),    # dash
    ("deploy started",),    # space inside a name
    ("deploy.started",),    # dot
    ("x" * 65,),            # too long
    ("user_message",),      # a built-in name
    ("run_started",),       # a built-in run-scoped name
])
def test_build_registry_rejects_bad_extra_names(extra):
    with pytest.raises(ValueError):
        build_registry(extra)


def test_event_types_includes_extras_from_the_environment():
    """EVENTSVC_EXTRA_EVENT_TYPES is read when the registry module is imported."""
    code = ("from eventsvc.types import EVENT_TYPES, is_run_scoped;"
            "t = EVENT_TYPES['deploy_started'];"
            "print(len(EVENT_TYPES), t.category, t.run_scoped, is_run_scoped('deploy_started'))")
    env = {**os.environ, "EVENTSVC_EXTRA_EVENT_TYPES": "deploy_started,deploy_finished"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["24", "extra", "False", "False"]
