"""`make cam` and its driver (scripts/cam/launch.py): values reach main_gradcam.py verbatim, WEIGHTS=demo,
and the entry point's exit code comes back as it is (README, "Exit codes")."""

from __future__ import annotations

from pathlib import Path

import pytest

from kit.core.errors import KitError
from scripts.cam import launch as cam
from scripts.upstream.errors import CheckoutError, ConfigError
from tests.conftest import fake_cam_checkout


@pytest.fixture
def checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """run_cam against a fake checkout; returns the commands it would run."""
    return fake_cam_checkout(tmp_path, monkeypatch)


def test_weights_demo_reaches_the_entry_point_even_with_a_demo_folder(
    checkout: list[list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "demo").mkdir()  # many projects have one; it is not a checkpoint
    assert cam.run_cam("yolov7", weights="demo", source="imgs", out="run", extra=[]) == 0
    command = checkout.pop()
    assert command[command.index("--weights") + 1] == "demo"
    assert command[command.index("--source") + 1] == str(tmp_path / "imgs")
    (tmp_path / "demo").rmdir()
    (tmp_path / "demo").write_bytes(b"")  # a file named demo: that file
    cam.run_cam("yolov7", weights="demo", source="imgs", out="run", extra=[])
    command = checkout.pop()
    assert command[command.index("--weights") + 1] == str(tmp_path / "demo")
    (tmp_path / "demo").unlink()
    # every upstream has a demo now; one without would be refused by name
    monkeypatch.setattr(cam, "DEMO_FALLBACK", ("yolov3", "yolov5", "yolov7"))
    with pytest.raises(
        ConfigError, match=r"WEIGHTS=demo is the demo detector of yolov3, yolov5, yolov7.*detectron2 has none"
    ):
        cam.run_cam("detectron2", weights="demo", source=None, out=None, extra=[])


def test_driver_exit_codes(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def raising(error: BaseException) -> None:
        def run_cam(*args: object, **kwargs: object) -> int:
            raise error

        monkeypatch.setattr(cam, "run_cam", run_cam)

    for code in (0, 1, 2, 3, 130):  # the entry point's code, as it is
        monkeypatch.setattr(cam, "run_cam", lambda *a, code=code, **k: code)
        assert cam.main(["yolov7"]) == code
    raising(KitError("no such file"))
    assert cam.main(["yolov7"]) == 2 and capsys.readouterr().err == "error: no such file\n"
    raising(KeyboardInterrupt())
    assert cam.main(["yolov7"]) == 130
    assert capsys.readouterr().err.startswith("interrupted before main_gradcam.py started")
    raising(ZeroDivisionError("boom"))
    assert cam.main(["yolov7"]) == 3  # a bug in the driver never looks like "some images failed"
    err = capsys.readouterr().err
    assert "Traceback" in err and "ZeroDivisionError: boom" in err and "please report it" in err


def test_a_stale_or_edited_entry_point_is_refused_with_the_fix(
    checkout: list[list[str]], tmp_path: Path
) -> None:
    """A checkout set up by an older kit would run the old main_gradcam.py against the new kit."""
    cam.run_cam("yolov7", weights="demo", source=None, out=None, extra=[])
    installed = tmp_path / "checkouts" / "yolov7" / "main_gradcam.py"
    installed.write_text("# an older kit's entry point\n")
    original = cam.checkout_path
    cam.checkout_path = lambda project, name: installed.parent  # type: ignore[assignment]
    try:
        with pytest.raises(
            CheckoutError, match=r"not the kit's current entry point .*Run `make setup-yolov7`"
        ):
            cam.run_cam("yolov7", weights="demo", source=None, out=None, extra=[])
    finally:
        cam.checkout_path = original


def test_without_weights_and_without_a_demo_the_error_says_how_to_get_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kit.core.errors import DownloadError

    def offline(name: str) -> Path:
        raise DownloadError(f"could not reach {cam.weights_url(name)} (no network)")

    monkeypatch.setenv(cam.WEIGHTS_DIR_ENV, str(tmp_path / "w"))
    monkeypatch.setattr(cam, "default_weights", offline)
    monkeypatch.setattr(cam, "DEMO_FALLBACK", ())  # an upstream without a demo detector
    with pytest.raises(DownloadError) as info:
        cam.chosen_weights("yolov5", weights=None, config=None, checkout=tmp_path)
    url = cam.weights_url("yolov5")
    text = str(info.value)
    assert text.startswith(f"could not reach {url} (no network)\nyolov5 has no demo detector to run offline")
    assert f"copy it to {tmp_path / 'w' / 'yolov5' / url.rsplit('/', 1)[-1]}" in text
    assert "WEIGHTS=path/to/file" in text and "KIT_YOLOV5_WEIGHTS_URL" in text
