"""Behaviour unchanged: each case of tests/golden/cases.py, run with the code checked out, gives
exactly the record stored in tests/golden/references/ (written from the reference code by
``python -m tests.golden.record``; see tests/golden/README.md).

The cases drive the kit from outside only (make cam, make eval, main_gradcam.py, torchrun), so
they hold across a reorganisation of the kit's modules. On a difference the failure shows it as a
diff of the stored form, reference first.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.golden.cases import CASES, CaseError, Workspace, reference_path, run_case, upstreams_of
from tests.golden.record import diff

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def checkouts() -> dict[str, Path]:
    """The checkouts the module's cases asked for so far (filled by each test from the session
    fixtures of conftest.py, which skip where an upstream is unreachable)."""
    return {}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, checkouts: dict[str, Path]) -> Workspace:
    """One folder for every case of the module: inputs (checkpoints, images) are made once."""
    return Workspace(root=tmp_path_factory.mktemp("golden"), checkout=checkouts.__getitem__)


@pytest.mark.parametrize("case", CASES)
def test_outputs_equal_the_reference(
    case: str, workspace: Workspace, checkouts: dict[str, Path], request: pytest.FixtureRequest
) -> None:
    reference = reference_path(case)
    if not reference.is_file():
        pytest.fail(f"no reference {reference.name}: record it with `python -m tests.golden.record {case}`")
    for name in upstreams_of(case):
        checkouts[name] = request.getfixturevalue(f"{name}_checkout")
    try:
        actual = run_case(case, workspace)
    except CaseError as error:
        pytest.fail(f"case {case}: {error}", pytrace=False)
    expected = reference.read_text(encoding="utf-8")
    if actual != expected:
        pytest.fail(
            f"case {case} differs from tests/golden/references/{reference.name}:\n"
            + diff(expected, actual, names=("reference", "this code")),
            pytrace=False,
        )
