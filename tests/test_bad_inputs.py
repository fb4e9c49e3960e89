"""No silent failures: every bad input to ``helpers`` gets a clear error, every diverging fit stops.

The probes live in ``tests/probe_bad_inputs.py`` (run it as a script for the full report); here
each class of bad input is one parametrised test over its probes. A probe passes when it ends
in a clear error (the expected exception, naming what was wrong, showing the value given and
saying what to do) or, where the input is valid, in a correct result. The few probes listed in
``KNOWN_UNCLEAR`` may keep a less helpful error, but never fail silently.
"""

import probe_bad_inputs as pb
import pytest


def _params(category):
    return [pytest.param(p, id=p.name) for p in pb.probes(category)]


def _assert_right(probe):
    outcome = pb.run(probe)
    allowed = {pb.CLEAR, pb.HANDLED} | ({pb.UNCLEAR} if probe.name in pb.KNOWN_UNCLEAR else set())
    assert outcome.verdict in allowed, f"{outcome.verdict} ({probe.why or probe.expect}): {outcome.detail}"


@pytest.mark.parametrize("probe", _params("types"))
def test_wrong_types_are_refused_and_integer_scalars_accepted(probe):
    _assert_right(probe)


@pytest.mark.parametrize("probe", _params("ranges"))
def test_values_out_of_range_are_refused(probe):
    _assert_right(probe)


@pytest.mark.parametrize("probe", _params("shapes"))
def test_mis_shaped_tensors_are_refused(probe):
    _assert_right(probe)


@pytest.mark.parametrize("probe", _params("finiteness"))
def test_nan_and_inf_are_refused(probe):
    _assert_right(probe)


@pytest.mark.parametrize("probe", _params("files"))
def test_damaged_foreign_or_unwritable_files_are_not_trusted(probe):
    _assert_right(probe)


@pytest.mark.parametrize("probe", _params("divergence"))
def test_diverging_fits_stop(probe):
    _assert_right(probe)


def test_the_probe_set_is_wide():
    names = [p.name for p in pb.PROBES]
    assert len(names) == len(set(names)) and len(names) >= 250
    assert {p.category for p in pb.PROBES} == set(pb.CATEGORIES)
    assert set(pb.KNOWN_UNCLEAR) <= set(names)
