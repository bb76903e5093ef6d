"""Go rules of this module: rules_go's, with what its BUILD files repeat.

BUILD files load go_test from here (gazelle's map_kind in //:BUILD.bazel).
"""

load("@rules_go//go:def.bzl", _go_test = "go_test")

def go_test(name, runfiles_env = {}, data = [], env = {}, race = "off", **kwargs):
    """rules_go's go_test, plus `runfiles_env`, in the appliance's Go configuration.

    Every test builds pure and static, as every Go binary of the appliance
    does (the kubelet, containerd, runc's and CNI's libraries, init): the
    packages tests share with them compile once, in one configuration. A
    test under the race detector needs cgo, so it has a configuration of its
    own: give race = "on" only to tests of concurrent code whose
    dependencies are few (the race build of the standard library alone
    costs minutes on a cold 2-core machine).

    Args:
      name: the test's name.
      runfiles_env: {VARIABLE: label} of single files the test reads: each
        label is added to `data` and VARIABLE is set to its rlocationpath
        (read with //tests/runfile), instead of naming each file twice.
      data: as go_test's.
      env: as go_test's.
      race: "on" for the race detector (with cgo); "off" by default.
      **kwargs: passed to go_test.
    """
    if race == "on":
        kwargs.setdefault("pure", "off")
    else:
        kwargs.setdefault("pure", "on")
        kwargs.setdefault("static", "on")
    data = list(data)
    env = dict(env)
    for variable, label in runfiles_env.items():
        if variable in env:
            fail("go_test %s: %s is in both env and runfiles_env" % (name, variable))
        if label not in data:
            data.append(label)
        env[variable] = "$(rlocationpath %s)" % label
    _go_test(name = name, data = data, env = env, race = race, **kwargs)
