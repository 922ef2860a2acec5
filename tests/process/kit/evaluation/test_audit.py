"""kit.evaluation.audit: per-class energy_in_box of a run folder written by the kit's own RunWriter, the
matched/unmatched split from a real --eval report, old and damaged manifests, locked folders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kit.evaluation.audit import audit_run, main, write_audit
from kit.rundir.lock import RunLock, identity
from kit.rundir.reader import RunFolderError
from kit.rundir.schema import LOCK_NAME
from tests.children import GIB, Outcome, dead_pid, run_child, run_module
from tests.runs import H, W, det, energy_map, write_run
from tests.unit.kit.evaluation.test_audit import energies_run, snapshot


@pytest.fixture
def run(tmp_path: Path) -> Path:
    return energies_run(tmp_path / "run")


# ---- the run's lock ---------------------------------------------------------------------------
def test_a_run_folder_in_use_is_not_written(run: Path, capsys: Any) -> None:
    with RunLock(run / LOCK_NAME, token="live"):  # a live run holds the folder
        before = snapshot(run)
        assert main([str(run)]) == 2
        err = capsys.readouterr().err
        assert f"pid {os.getpid()}" in err and "not final" in err and "--no-write" in err
        with pytest.raises(RunFolderError, match="in use"):
            write_audit(audit_run(run))
        assert main([str(run), "--no-write"]) == 0  # reading what it finished is safe
        assert snapshot(run) == before


def test_a_lock_left_by_a_dead_run_is_noted_and_left_alone(run: Path, capsys: Any) -> None:
    lock = {**identity(), "pid": dead_pid(), "token": "x", "started": "then"}  # this host, boot, pidns
    (run / LOCK_NAME).write_text(json.dumps(lock))
    assert main([str(run)]) == 0
    assert "no longer runs" in capsys.readouterr().out and (run / "audit.json").is_file()
    assert json.loads((run / LOCK_NAME).read_text()) == lock  # the next run takes it over, not the audit


def test_python_m_kit_audit_runs_without_loading_torch(run: Path) -> None:
    done = run_module("torch_free", "kit.evaluation.audit", str(run), "--no-write")
    assert done.exit == 0, done.stderr
    table, result = done.stdout.rsplit("\n", 2)[0], json.loads(done.stdout.splitlines()[-1])
    assert result == {"exit": 0, "torch": False}
    assert "all" in table and not (run / "audit.json").exists()


def test_a_reader_that_stops_early_is_no_error(tmp_path: Path) -> None:
    """``python -m kit.evaluation.audit RUN | head``: audit.json is written first, the exit is quiet."""
    dets = [
        {"id": i, "class_id": 0, "score": 0.5, "maps": {"74": {"energy_in_box": i / 4000}}}
        for i in range(3000)
    ]
    (tmp_path / "manifest.json").write_text(
        json.dumps({"layers": ["74"], "images": [{"file": "a", "detections": dets}]})
    )
    command = [sys.executable, "-m", "kit.evaluation.audit", str(tmp_path), "--top", "3000"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        assert process.stdout is not None and process.stdout.readline().startswith(b"audit of")
        process.stdout.close()  # the table is larger than the pipe's buffer: the audit's next write fails
        assert process.wait(timeout=60) == 0 and process.stderr is not None
        assert b"Traceback" not in process.stderr.read()
    assert json.loads((tmp_path / "audit.json").read_text())["all"]["n"] == 3000


@pytest.mark.parametrize(
    ("target", "module"),
    [("audit", "kit audit"), ("report", "kit report")],  # python -m kit <command>
)
def test_make_audit_and_report_pass_the_run_folder_verbatim(target: str, module: str, tmp_path: Path) -> None:
    """make audit|report RUN=...: the folder's name reaches the module as one argument, spaces, $
    and backticks included; ARGS is split as typed; no RUN is refused with the fix (exit 2)."""
    repo = Path(__file__).resolve().parents[4]
    fake = tmp_path / "fakepython"
    fake.write_text(f"#!{sys.executable}\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    fake.chmod(0o755)
    make = ["make", "-s", "--no-print-directory", "-f", str(repo / "Makefile"), target, f"PYTHON={fake}"]
    run = "runs/my run $HOME `touch pwned`"
    args = ["--top", "5", "--rank", "density"] if target == "audit" else []
    done = subprocess.run(
        [*make, f"RUN={run}", f"ARGS={' '.join(args)}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(done.stdout) == ["-m", *module.split(), run, *args]
    assert not (tmp_path / "pwned").exists()
    refused = subprocess.run(make, cwd=tmp_path, capture_output=True, text=True)
    assert refused.returncode != 0 and f"make {target} needs RUN=<run folder>" in refused.stderr


@pytest.mark.parametrize(
    "shape, payload_mb",
    [((40000, 40000), 2), ((40000, 40000), 200)],  # a header beyond its bytes; a member that inflates far
)
def test_a_map_that_would_decompress_beyond_a_maps_size_is_not_read(
    tmp_path: Path, shape: tuple[int, int], payload_mb: int
) -> None:
    """A run folder from someone else: its maps/<stem>.npz may declare a 6.4 GB array in a few MB of
    deflated zeros. The audit checks the member's size and the array header before reading, in a
    child whose address space is capped: the map counts as unreadable (0, with a note), never a crash."""
    import io
    import zipfile

    out = write_run(tmp_path / "run", {"a.png": [det(0, 0, 0.9, {"74": np.zeros((H, W), np.float32)})]})
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": shape})
    npz = out / "maps" / "a.npz"
    keys = list(np.load(npz).files)
    npz.unlink()
    with zipfile.ZipFile(npz, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for key in keys:
            with z.open(f"{key}.npy", "w", force_zip64=True) as member:
                member.write(header.getvalue())
                for _ in range(payload_mb):
                    member.write(b"\0" * 2**20)
    assert npz.stat().st_size < 2**20 * (1 + payload_mb // 100)
    result = run_module("audit", str(out), address_space=3 * GIB)
    assert result.exit == 0, result.stderr
    # counted as 0, said so, not read
    assert json.loads(result.stdout) == {"measured": 1, "empty": 0, "noted": True}


def _capped(module: str, folder: Path) -> Outcome:
    """``python -m <module> <folder>`` in a child whose address space is capped at 1.5 GiB."""
    return run_child([sys.executable, "-m", module, str(folder)], address_space=3 * 2**29, timeout=120)


def sparse(path: Path, size: int) -> None:
    with path.open("wb") as f:
        f.truncate(size)


@pytest.mark.parametrize("module", ["kit.evaluation.audit", "kit.report.page"])
def test_a_sparse_manifest_of_gigabytes_is_refused_unread_by_audit_and_report(
    tmp_path: Path, module: str
) -> None:
    """make audit / make report on a folder from someone else whose manifest.json is a sparse file of
    3 GB: exit 2 naming the file and its limit, in a child capped below its size (it was read
    whole: MemoryError, exit 3, or gigabytes of memory)."""
    out = write_run(tmp_path / "run", {"a.png": [det(0, 0, 0.9, {"74": energy_map(0.9)})]})
    sparse(out / "manifest.json", 3 * 2**30)
    result = _capped(module, out)
    assert result.exit == 2, result.stderr
    assert "manifest.json is larger than 512 MiB" in result.stderr and "Traceback" not in result.stderr


def test_a_sparse_eval_json_of_gigabytes_is_noted_and_the_audit_goes_on(tmp_path: Path) -> None:
    """eval.json of 3 GB (sparse) beside a real run: the audit notes it and has no matched/unmatched
    split, in a child capped below its size (it was read whole: exit 3)."""
    out = write_run(tmp_path / "run", {"a.png": [det(0, 0, 0.9, {"74": energy_map(0.9)})]})
    sparse(out / "eval.json", 3 * 2**30)
    result = _capped("kit.evaluation.audit", out)
    assert result.exit == 0, result.stderr
    assert "eval.json is larger than 512 MiB" in result.stdout + result.stderr
    assert json.loads((out / "audit.json").read_text())["all"]["measured"] == 1
