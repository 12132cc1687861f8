"""Bad inputs and faults of ``python -m advbook.train_robust``: each stops with a clean
``error: ...`` before anything is loaded or trained, and leaves no temporary files behind."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from advbook import train_robust

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["--method", "standard", "--eps", "0.2", "--model", "mlp", "--subset", "64",
        "--eval-subset", "32", "--batch-size", "32", "--eval-steps", "1", "--epochs", "1",
        "--device", "cpu", "--no-progress"]



@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Make loading the data or training fail the test: the checks must come first."""
    calls: list[str] = []

    def forbidden(name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            raise AssertionError(f"{name} was called although the command line is bad")
        return call

    monkeypatch.setattr(train_robust, "load_mnist", forbidden("load_mnist"))
    monkeypatch.setattr(train_robust, "fit", forbidden("fit"))
    yield calls
    assert calls == []


def _hidden(folder: Path) -> list[str]:
    """Temporary or probe files that the command line may have left in ``folder``."""
    return sorted(p.name for p in folder.rglob(".*"))


def _fails(argv: list[str], fragment: str) -> str:
    with pytest.raises(SystemExit) as exc:
        train_robust.main(argv)
    message = str(exc.value.code)
    assert message.startswith("error: ") and fragment in message, message
    return message


def test_out_naming_a_directory_stops_before_training(tmp_path: Path,
                                                      no_training: list[str]) -> None:
    (tmp_path / "results").mkdir()
    _fails([*TINY, "--out", str(tmp_path / "results")], "is a directory")
    assert _hidden(tmp_path) == [] and list((tmp_path / "results").iterdir()) == []


def test_out_below_a_file_stops_before_training(tmp_path: Path, no_training: list[str]) -> None:
    (tmp_path / "file").write_text("x")
    _fails([*TINY, "--out", str(tmp_path / "file" / "r.json")], "is not a directory")
    _fails([*TINY, "--out", str(tmp_path / "file" / "sub" / "r.json")], "is not a directory")
    assert _hidden(tmp_path) == []


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="needs a POSIX user that file permissions apply to (not root)")
def test_out_in_a_read_only_folder_stops_before_training(tmp_path: Path,
                                                         no_training: list[str]) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        _fails([*TINY, "--out", str(ro / "r.json")], "cannot write there")
        _fails([*TINY, "--out", str(ro / "new" / "r.json")], "cannot write there")
    finally:
        ro.chmod(0o700)
    assert _hidden(tmp_path) == []


def test_checkpoint_paths_are_checked_before_training(tmp_path: Path,
                                                      no_training: list[str]) -> None:
    out = ["--out", str(tmp_path / "r.json")]
    _fails([*TINY, *out, "--checkpoint", str(tmp_path)], "--checkpoint")
    _fails([*TINY, *out, "--checkpoint", str(tmp_path)], "is a directory")
    (tmp_path / "file").write_text("x")
    _fails([*TINY, *out, "--checkpoint", str(tmp_path / "file" / "ck.pt")], "not a directory")
    _fails([*TINY, "--out", str(tmp_path / "same"), "--checkpoint", str(tmp_path / "same")],
           "name the same file")
    assert _hidden(tmp_path) == []


@pytest.mark.parametrize(("device", "fragment"), [
    ("tpu", "unknown device; expected cpu, cuda or cuda:N"),
    ("not a device", "unknown device"),
    ("meta", "not supported; expected cpu, cuda or cuda:N"),
])
def test_unknown_devices_stop_before_training(device: str, fragment: str, tmp_path: Path,
                                              no_training: list[str]) -> None:
    argv = [*TINY, "--out", str(tmp_path / "r.json"), "--device", device]
    assert fragment in _fails(argv, f"--device {device}")


def test_cuda_without_a_gpu_stops_before_training(tmp_path: Path, no_training: list[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device in ("cuda", "cuda:1"):
        argv = [*TINY, "--out", str(tmp_path / "r.json"), "--device", device]
        assert "use --device cpu" in _fails(argv, "no GPU is available")


def test_cuda_index_beyond_the_gpus_stops_before_training(
        tmp_path: Path, no_training: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    argv = [*TINY, "--out", str(tmp_path / "r.json"), "--device", "cuda:2"]
    _fails(argv, "has 2 GPU(s), cuda:0 to cuda:1")


@pytest.mark.parametrize(("flag", "value", "fragment"), [
    ("--seed", "-1", "integer >= 0"),
    ("--seed", "1.5", "expected an integer"),
    ("--seed", str(2**64), "expected an integer <="),
    ("--epochs", "-1", "integer >= 0"),
    ("--eps", "-0.1", "finite number >= 0"),
    ("--eps", "nan", "finite number >= 0"),
    ("--lr", "0", "finite number > 0"),
    ("--lr", "-0.001", "finite number >= 0"),
    ("--lr=-1e-3", None, "finite number >= 0"),
    ("--lr", "nan", "finite number >= 0"),
    ("--lr", "inf", "finite number >= 0"),
    ("--override-settings", None, "only applies with --resume"),
])
def test_bad_numbers_exit_with_a_message(flag: str, value: str | None, fragment: str,
                                         tmp_path: Path, no_training: list[str],
                                         capsys: pytest.CaptureFixture[str]) -> None:
    argv = [*TINY, "--out", str(tmp_path / "r.json"), flag, *([value] if value else [])]
    with pytest.raises(SystemExit) as exc:
        train_robust.main(argv)
    assert exc.value.code == 2  # argparse: usage and the message on stderr
    err = capsys.readouterr().err
    assert fragment in err and flag.split("=")[0] in err, err
    assert list(tmp_path.iterdir()) == []


def test_results_are_written_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "r.json"
    train_robust._write_json(target, {"a": 1.0, "b": float("nan")})
    assert json.loads(target.read_text()) == {"a": 1.0, "b": None}

    def broken(src: Any, dst: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError, match="No space"):
        train_robust._write_json(target, {"a": 2.0})
    assert json.loads(target.read_text()) == {"a": 1.0, "b": None}  # untouched
    assert _hidden(tmp_path) == []


def test_results_that_cannot_be_written_are_printed(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    def broken(path: Path, payload: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(train_robust, "_write_json", broken)
    with pytest.raises(SystemExit) as exc:
        train_robust._save_results(tmp_path / "r.json", {"clean_accuracy": 0.5})
    assert "printed above" in str(exc.value.code) and "No space" in str(exc.value.code)
    assert json.loads(capsys.readouterr().out) == {"clean_accuracy": 0.5}


def _first_run(tmp_path: Path) -> list[str]:
    """One tiny epoch with a checkpoint; returns the arguments to resume it."""
    ck = ["--checkpoint", str(tmp_path / "ck.pt")]
    results = train_robust.main([*TINY, *ck, "--out", str(tmp_path / "r1.json")])
    assert results is not None and results["overrides"] == {}
    return [*TINY, *ck, "--resume", "--epochs", "2"]


def test_results_record_no_overrides_on_a_plain_resume(tmp_path: Path) -> None:
    resume = _first_run(tmp_path)
    results = train_robust.main([*resume, "--out", str(tmp_path / "r2.json")])
    assert results is not None and results["overrides"] == {}
    assert json.loads((tmp_path / "r2.json").read_text())["overrides"] == {}
    assert [h["epoch"] for h in results["history"]] == [1, 2]
    assert _hidden(tmp_path) == []


def test_settings_cover_the_run_but_not_the_epochs() -> None:
    settings = train_robust._run_settings(train_robust.parse_args([]))
    assert "epochs" not in settings and "out" not in settings and "device" not in settings
    assert {"method", "eps", "steps", "alpha", "beta", "mix", "random_start", "eps_warmup",
            "model", "lr", "batch_size", "subset", "eval_subset", "seed"} == set(settings)


def test_resuming_with_other_settings_stops_with_a_hint(tmp_path: Path) -> None:
    resume = _first_run(tmp_path)
    before = (tmp_path / "ck.pt").read_bytes()
    message = _fails([*resume, "--lr", "0.01", "--out", str(tmp_path / "r2.json")],
                     "cannot resume from --checkpoint")
    assert "lr" in message and "--override-settings" in message and "fresh run" in message
    assert (tmp_path / "ck.pt").read_bytes() == before  # nothing was trained
    assert not (tmp_path / "r2.json").exists() and _hidden(tmp_path) == []


def test_override_settings_continues_and_records_the_overrides(tmp_path: Path) -> None:
    resume = _first_run(tmp_path)
    argv = [*resume, "--lr", "0.01", "--override-settings", "--out", str(tmp_path / "r2.json")]
    with pytest.warns(RuntimeWarning, match="lr"):
        results = train_robust.main(argv)
    # fit also records the optimizer's own hyper-parameters (param_groups[0].lr)
    assert results is not None and results["overrides"]["lr"] == [0.001, 0.01]
    stored = json.loads((tmp_path / "r2.json").read_text())["overrides"]
    assert stored == results["overrides"] and set(stored) <= {"lr", "param_groups[0].lr"}
    assert [h["epoch"] for h in results["history"]] == [1, 2]


def _fit_with_settings(calls: list[dict[str, Any]]) -> Any:
    """A stand-in for ``fit`` with the ``settings=`` interface: stored settings lr=0.001."""
    import pandas as pd

    def fit(model: Any, x: Any, y: Any, *, settings: Any = None, resume: Any = False,
            **kwargs: Any) -> pd.DataFrame:
        calls.append({"settings": dict(settings), "resume": resume})
        changed = {k: [0.001, v] for k, v in settings.items() if k == "lr" and v != 0.001}
        if changed and resume is True:
            raise ValueError("the settings differ from the checkpoint's: lr: 0.001 -> 0.01")
        history = pd.DataFrame([{"epoch": 1, "train_loss": 1.0, "seconds": 0.1}])
        history.attrs["overrides"] = changed if resume == "override" else {}
        return history

    return fit


def test_the_cli_speaks_the_settings_interface_of_fit(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Against a stand-in of the interface, so it runs whether or not ``fit`` has it yet."""
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(train_robust, "fit", _fit_with_settings(calls))
    (tmp_path / "ck.pt").write_bytes(b"stored")
    resume = [*TINY, "--checkpoint", str(tmp_path / "ck.pt"), "--resume", "--lr", "0.01",
              "--out", str(tmp_path / "r.json")]
    message = _fails(resume, "lr: 0.001 -> 0.01")
    assert "pass --override-settings" in message and not (tmp_path / "r.json").exists()
    first = calls[-1]
    assert first["resume"] is True and first["settings"]["lr"] == 0.01
    assert first["settings"] == train_robust._run_settings(train_robust.parse_args(resume))
    results = train_robust.main([*resume, "--override-settings"])
    assert calls[-1]["resume"] == "override"
    assert results is not None and results["overrides"] == {"lr": [0.001, 0.01]}
    assert json.loads((tmp_path / "r.json").read_text())["overrides"] == {"lr": [0.001, 0.01]}
    assert _hidden(tmp_path) == []
