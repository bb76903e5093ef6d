"""Go rules of this module: rules_go's, with what its BUILD files repeat.

BUILD files load go_test from here (gazelle's map_kind in //:BUILD.bazel).
"""

load("@rules_go//go:def.bzl", _go_test = "go_test")

def go_test(name, runfiles_env = {}, data = [], env = {}, race = "on", **kwargs):
    """rules_go's go_test, plus `runfiles_env`, under the race detector by default.

    Every test runs with race = "on" unless it says otherwise: the tree's
    code is concurrent, and one configuration for every test compiles the
    packages they share once (a test without race would build them all
    again in a configuration of their own).

    Args:
      name: the test's name.
      runfiles_env: {VARIABLE: label} of single files the test reads: each
        label is added to `data` and VARIABLE is set to its rlocationpath
        (read with //tests/runfile), instead of naming each file twice.
      data: as go_test's.
      env: as go_test's.
      race: as go_test's, "on" unless given.
      **kwargs: passed to go_test.
    """
    data = list(data)
    env = dict(env)
    for variable, label in runfiles_env.items():
        if variable in env:
            fail("go_test %s: %s is in both env and runfiles_env" % (name, variable))
        if label not in data:
            data.append(label)
        env[variable] = "$(rlocationpath %s)" % label
    _go_test(name = name, data = data, env = env, race = race, **kwargs)
