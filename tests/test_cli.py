"""Bad input on the command line: one clear line ``error: ...`` (no traceback unless --verbose debug), a non-zero
exit, and nothing created, deleted or half-written.  Two real subprocesses check the process-level contract; the
other cases call ``main.main`` in-process (same code path, without 3 s of imports each)."""
import hashlib
import os
import re
import subprocess
import sys

import pytest
import torch
from conftest import REPO, tiny_digits_config, write_yaml

import main as cli


def snapshot(root):
    """{relative path: sha256} of every file under ``root``."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_subprocess_error_is_one_line_and_a_traceback_only_with_verbose_debug(tmp_path):
    bad = write_yaml(tmp_path / "odd.yml", tiny_digits_config(data={"image_size": 7}))
    procs = [subprocess.Popen([sys.executable, str(REPO / "main.py"), "--config", bad, "--doc", "d",
                               "--run", str(tmp_path / "run"), *extra], cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
             for extra in ([], ["--verbose", "debug"])]
    (out, err), (_, debug_err) = (p.communicate(timeout=300) for p in procs)
    expected = (f"error: {bad}: data.image_size must be a positive even int: the mean-pool downsampling in res2 halves "
                f"H and W, got 7 (the AnnealRunner network)")
    assert procs[0].returncode == 1 and err.strip() == expected, err
    assert out == ""
    assert procs[1].returncode == 1 and debug_err.strip().splitlines()[-1] == expected
    assert debug_err.startswith("Traceback") and "check_config" in debug_err
    assert not (tmp_path / "run").exists()                        # caught before any folder was made


def run_bad(capfd, tmp_path, *argv):
    """main.main(ARGV); return (exit code, last stderr line, whole stderr)."""
    capfd.readouterr()
    rc = cli.main(list(argv))
    err = capfd.readouterr().err
    lines = err.strip().splitlines()
    return rc, lines[-1] if lines else "", err


CONFIG_CASES = {
    "missing config": (None, r"config file not found: {tmp}/nope.yml \(looked in configs/ and as a path\)"),
    "empty YAML": ("", r"config {cfg} is empty"),
    "malformed YAML": ("training: [1, 2\n", r"malformed YAML in {cfg}: expected ',' or '\]', but got '<stream end>' "
                                          r"\(line 2\)"),
    "unknown key": ({"training": {"n_iter": 5}}, r"{cfg}: unknown config key training\.n_iter \(allowed in training"),
    "wrong type": ({"training": {"batch_size": "16"}}, r"{cfg}: training\.batch_size must be of type int, got str"),
    "negative lr": ({"optim": {"lr": -0.001}}, r"{cfg}: optim\.lr must be > 0, got -0\.001"),
    "sigma_end > sigma_begin": ({"model": {"sigma_begin": 0.01, "sigma_end": 1.0}},
                                r"{cfg}: model\.sigma_end \(1\.0\) must not exceed model\.sigma_begin \(0\.01\)"),
    "zero batch size": ({"training": {"batch_size": 0}}, r"{cfg}: training\.batch_size must be > 0, got 0"),
    "odd image size": ({"data": {"image_size": 9}},
                       r"{cfg}: data\.image_size must be a positive even int: .*, got 9 \(the AnnealRunner network\)"),
    "ngf too small": ({"model": {"ngf": 1}}, r"{cfg}: model\.ngf must be an int >= 2 .*\(the AnnealRunner network\)"),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_bad_config_is_one_line_and_creates_nothing(tmp_path, capfd, case):
    content, message = CONFIG_CASES[case]
    cfg = tmp_path / ("nope.yml" if content is None else "bad.yml")
    if isinstance(content, str):
        cfg.write_text(content)
    elif content is not None:
        raw = tiny_digits_config()
        for section, values in content.items():
            raw[section].update(values)
        write_yaml(cfg, raw)
    before = snapshot(tmp_path)
    rc, last, err = run_bad(capfd, tmp_path, "--config", str(cfg), "--doc", "d", "--run", str(tmp_path / "run"))
    assert rc == 1
    assert re.fullmatch("error: " + message.format(tmp=tmp_path, cfg=cfg) + ".*", last), last
    assert "Traceback" not in err
    assert snapshot(tmp_path) == before and not (tmp_path / "run").exists()


@pytest.fixture
def trained(tmp_path, capfd):
    """A finished 2-step run 'ok' in tmp_path/run."""
    cfg = write_yaml(tmp_path / "ok.yml", tiny_digits_config(training={"n_iters": 2, "snapshot_freq": 2}))
    assert cli.main(["--config", cfg, "--doc", "ok", "--run", str(tmp_path / "run")]) == 0
    return tmp_path / "run"


def test_bad_flags_and_folders_change_nothing(tmp_path, capfd, trained):
    """Every mistake below leaves every file under tmp_path exactly as it was."""
    run = str(trained)
    ok = str(tmp_path / "ok.yml")
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    cases = [
        (["--runner", "Nope", "--doc", "x", "--run", run],
         "error: unknown runner 'Nope'; choose one of AnnealRunner"),
        (["--config", ok, "--doc", "ok", "--run", run],
         f"error: run 'ok' already exists ({run}/logs/ok); use --resume_training to continue it, another --doc, "
         f"or --overwrite to replace it"),
        (["--doc", "never", "--run", run, "--test"],
         f"error: no trained run at {run}/logs/never (missing config.yml); train it first with --doc never"),
        (["--doc", "never", "--run", run, "--resume_training"],
         f"error: cannot resume: no checkpoint in {run}/logs/never"),
        (["--config", ok, "--doc", "x", "--run", str(blocker / "run")],
         f"error: cannot write the run folder {blocker}/run/logs/x: Not a directory"),
        (["--doc", "ok", "--run", run, "--test", "-o", str(blocker)],
         f"error: output folder {blocker} exists and is not a folder"),
        (["--doc", "ok", "--run", run, "--test", "-o", str(blocker / "images")],
         f"error: cannot write to output folder {blocker}/images: Not a directory"),
        (["--doc", "ok", "--run", run, "--test", "-o", str(trained / "logs")],
         f"error: output folder {trained}/logs is not empty; choose another with -o or pass --overwrite"),
    ]
    if not torch.cuda.is_available():
        cases.append((["--config", ok, "--doc", "x", "--run", run, "--device", "cuda"],
                      "error: --device cuda was asked for, but CUDA is not available"))
    before = snapshot(tmp_path)
    for argv, expected in cases:
        rc, last, err = run_bad(capfd, tmp_path, *argv)
        assert (rc, last) == (1, expected) or (rc == 1 and last.startswith(expected)), (argv, last)
        assert "Traceback" not in err
        assert snapshot(tmp_path) == before, argv
    assert sorted(p.name for p in (trained / "logs").iterdir()) == ["ok"]

    rc, last, _ = run_bad(capfd, tmp_path, "--doc", "ok", "--run", run, "--verbose", "loud")
    assert (rc, last) == (2, "error: unknown --verbose level 'loud'; use debug, info, warning or error")


def test_test_without_a_checkpoint(tmp_path, capfd, trained):
    (trained / "logs" / "ok" / "checkpoint.pth").rename(tmp_path / "moved.pth")
    before = snapshot(tmp_path)
    rc, last, _ = run_bad(capfd, tmp_path, "--doc", "ok", "--run", str(trained), "--test",
                          "-o", str(tmp_path / "img"))
    assert (rc, last) == (1, f"error: no checkpoint at {trained}/logs/ok/checkpoint.pth")
    assert snapshot(tmp_path) == before


def test_missing_data_offline_leaves_no_half_made_run(tmp_path, capfd, shared):
    """MNIST asked for offline from an empty folder: one line naming the folder and the expected layout; the run
    folder this attempt made is gone again, so the same command works once the data is there."""
    empty = tmp_path / "empty"
    empty.mkdir()
    cfg = {"training": {"batch_size": 4, "n_iters": 1, "num_workers": 0},
           "data": {"dataset": "MNIST", "image_size": 28, "channels": 1, "root": str(empty), "download": False},
           "model": {"ngf": 4, "num_classes": 2}}
    path = write_yaml(tmp_path / "mnist.yml", cfg)
    before = snapshot(tmp_path)
    rc, last, err = run_bad(capfd, tmp_path, "--config", path, "--doc", "m", "--run", str(tmp_path / "run"))
    assert rc == 1 and "Traceback" not in err
    assert last.startswith(f"error: MNIST data not available under {empty} (") and \
        f"put it there as {empty}/MNIST/raw/train-images-idx3-ubyte" in last, last
    assert snapshot(tmp_path) == before and not (tmp_path / "run" / "logs" / "m").exists()

    cfg["data"]["root"] = str(shared / "data")                    # the data is there now: the same command runs
    write_yaml(tmp_path / "mnist.yml", cfg)
    rc, last, err = run_bad(capfd, tmp_path, "--config", path, "--doc", "m", "--run", str(tmp_path / "run"))
    assert rc == 0, err
    assert (tmp_path / "run" / "logs" / "m" / "checkpoint.pth").is_file()
