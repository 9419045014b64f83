"""The probe registry (zsq_probe.probe_registry): one list of names for the config, the command line, compare and
build_probes, and the `needs` wiring between probes."""

import subprocess
import sys

import pytest

from zsq_probe.config import RunConfig
from zsq_probe.errors import UserError
from zsq_probe.probe_registry import BUILTIN_PROBE_NAMES, BUILTIN_PROBES, probe_names
from zsq_probe.probes import PROBES, Probe, build_order, build_probes, register_probe, unregister_probe
from zsq_probe.probes.hessian import HessianProbe
from zsq_probe.probes.slice import SliceProbe


def _cfg(*probes):
    cfg = RunConfig()
    cfg.probing.probes = list(probes)
    return cfg


@pytest.fixture
def registered():
    """Register probe classes for one test; unregister them afterwards."""
    names = []

    def add(*classes):
        for cls in classes:
            register_probe(cls)
            names.append(cls.name)

    yield add
    for name in names:
        unregister_probe(name)


class Provider(Probe):
    name = "test_provider"
    tables = ("test_provider",)


class Consumer(Probe):
    name = "test_consumer"
    tables = ("test_consumer",)
    needs = ("test_provider",)

    def __init__(self, cfg, origin="online"):
        super().__init__(cfg, origin)
        self.provider = None

    def connect(self, provider):
        self.provider = provider


# ------------------------------------------------------------------------------------------ one list of names
def test_the_registry_is_the_probes_package_registry():
    import zsq_probe.probe_registry as registry

    assert tuple(PROBES) == tuple(registry.REGISTERED) == BUILTIN_PROBE_NAMES == probe_names()
    for name, spec in BUILTIN_PROBES.items():
        assert PROBES[name].tables == spec.tables
        assert PROBES[name].posthoc_tables == spec.posthoc_tables
        assert bool(spec.posthoc_help) == bool(spec.posthoc_tables)


def test_the_config_accepts_exactly_the_registry_names(registered):
    for name in probe_names():
        _cfg(name).validate()
    _cfg(*probe_names()).validate()
    with pytest.raises(UserError, match="unknown probe 'no_such_probe'"):
        _cfg("cosine", "no_such_probe").validate()
    with pytest.raises(UserError, match="unknown probe 'test_consumer'"):
        _cfg("test_consumer").validate()
    registered(Consumer)
    _cfg("test_consumer").validate()  # a registered probe joins the names
    unregister_probe("test_consumer")
    with pytest.raises(UserError, match="unknown probe 'test_consumer'"):
        _cfg("test_consumer").validate()


@pytest.mark.slow  # a fresh interpreter: the start-up is the point (the slow tier, docs/development.md)
def test_config_validation_reads_the_names_without_importing_the_probes():
    code = (
        "import sys\n"
        "from zsq_probe.config import RunConfig\n"
        "cfg = RunConfig()\n"
        "cfg.probing.probes = ['cosine', 'slice']\n"
        "cfg.validate()\n"
        "assert 'zsq_probe.probes' not in sys.modules, 'config imported zsq_probe.probes'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_cli_and_compare_read_the_registry():
    from zsq_probe.analysis.probe_tables import COMPARABLE_PROBES, PROBE_TABLE
    from zsq_probe.cli.compare import ROWS
    from zsq_probe.cli.posthoc import COMMANDS

    assert set(COMMANDS) == {name for name, cls in PROBES.items() if cls.posthoc_tables}
    assert all(COMMANDS.values())
    assert set(COMPARABLE_PROBES) == set(ROWS) <= set(BUILTIN_PROBE_NAMES)
    for probe, table in PROBE_TABLE.items():
        assert table in BUILTIN_PROBES[probe].tables


def test_register_probe_refuses_a_taken_name_and_a_builtin_name_with_other_tables(registered):
    class Other(Probe):
        name = "cosine"
        tables = ("cosine",)

    with pytest.raises(ValueError, match="already registered"):
        register_probe(Other)
    order = list(PROBES)
    saved = PROBES.pop("cosine")
    try:
        with pytest.raises(ValueError, match="built-in probe 'cosine' writes"):
            register_probe(Other)  # its posthoc_tables differ from the registry's
    finally:
        PROBES["cosine"] = saved
        for name in order:  # back in registration order
            PROBES[name] = PROBES.pop(name)
    assert list(PROBES) == order and PROBES["cosine"] is saved


# ------------------------------------------------------------------------------------------------ needs
def test_build_probes_wires_a_declared_need(registered):
    registered(Consumer, Provider)
    probes = build_probes(_cfg("test_consumer", "test_provider"))
    consumer = next(p for p in probes if isinstance(p, Consumer))
    provider = next(p for p in probes if isinstance(p, Provider))
    assert consumer.provider is provider


def test_build_probes_orders_a_probe_after_what_it_needs(registered):
    registered(Consumer, Provider)  # the consumer is registered first
    assert list(PROBES).index("test_consumer") < list(PROBES).index("test_provider")
    probes = build_probes(_cfg("test_consumer", "test_provider"))
    assert [p.name for p in probes] == ["test_provider", "test_consumer"]
    assert build_order(["test_consumer", "test_provider", "cosine"]) == ["cosine", "test_provider", "test_consumer"]


def test_a_need_that_is_not_switched_on_is_left_out(registered):
    registered(Consumer, Provider)
    (consumer,) = build_probes(_cfg("test_consumer"))
    assert consumer.provider is None


def test_the_slice_probe_gets_the_hessian_probe_it_needs():
    probes = build_probes(_cfg("slice", "hessian", "cosine"))
    assert [p.name for p in probes] == ["cosine", "hessian", "slice"]
    hessian, slice_ = probes[1], probes[2]
    assert isinstance(hessian, HessianProbe) and isinstance(slice_, SliceProbe)
    assert slice_.hessian is hessian
    (alone,) = build_probes(_cfg("slice"))
    assert alone.hessian is None  # post hoc / without the Hessian probe: it computes its own eigenvectors


def test_a_probe_that_declares_needs_must_take_them(registered):
    class Greedy(Probe):
        name = "test_greedy"
        tables = ("test_greedy",)
        needs = ("test_provider",)

    registered(Provider, Greedy)
    with pytest.raises(NotImplementedError, match="test_greedy"):
        build_probes(_cfg("test_greedy", "test_provider"))


def test_needs_that_form_a_cycle_or_name_no_probe_are_refused(registered):
    class A(Probe):
        name = "test_a"
        tables = ("test_a",)
        needs = ("test_b",)

    class B(Probe):
        name = "test_b"
        tables = ("test_b",)
        needs = ("test_a",)

    class Lost(Probe):
        name = "test_lost"
        tables = ("test_lost",)
        needs = ("nowhere",)

    registered(A, B, Lost)
    with pytest.raises(ValueError, match="cycle"):
        build_order(["test_a", "test_b"])
    with pytest.raises(ValueError, match="'nowhere', which is not registered"):
        build_order(["test_lost"])
    with pytest.raises(UserError, match="unknown probe"):
        build_order(["no_such_probe"])
