"""eval.reference_stats: FID against a published statistics file (TTUR / pytorch-fid / EDM ``mu`` + ``sigma``,
score_sde ``pool_3``), written here from the run's own cached statistics by tools/fid_stats.py: the same numbers as
against the run's own reference, and a bad file is one line before any sample is drawn."""
import json

import numpy as np
import pytest
import yaml

import main as cli
from tools import fid_stats

pytest_plugins = ["test_eval_cli"]        # its fixture tiny_run: a tiny trained run with the stand-in Inception
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:FutureWarning")


def evaluate(root, out, *extra):
    return cli.main(["--eval", "--doc", "e", "--run", str(root / "run"), "-o", str(out), *map(str, extra)])


def overlay(tmp_path, name, **eval_keys):
    path = tmp_path / f"{name}.yml"
    path.write_text(yaml.safe_dump({"eval": eval_keys}))
    return path


@pytest.fixture(scope="module")
def own(tiny_run, tmp_path_factory):
    """metrics.json of --eval against the run's own reference."""
    out = tmp_path_factory.mktemp("own") / "ev"
    assert evaluate(tiny_run, out) == 0
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.parametrize("fmt", ["mu-sigma", "pool_3"])
def test_a_written_file_gives_the_run_own_numbers(tiny_run, own, tmp_path, capsys, fmt):
    stats = tmp_path / f"{fmt}.npz"
    assert fid_stats.main(["--doc", "e", "--run", str(tiny_run / "run"), "--format", fmt, "-o", str(stats)]) == 0
    assert sorted(np.load(stats).files) == (["mu", "sigma"] if fmt == "mu-sigma" else ["pool_3"])
    out = tmp_path / "ev"
    assert evaluate(tiny_run, out, "--config", overlay(tmp_path, "ref", reference_stats=str(stats))) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["fid"] == pytest.approx(own["fid"], rel=1e-6, abs=1e-6)
    record = m["reference_stats"]
    assert record["path"] == str(stats) and len(record["sha256"]) == 64 and m["reference"] == str(stats)
    if fmt == "pool_3":                                  # the features: KID and precision/recall too
        assert record["format"] == "pool_3 features (score_sde)"
        assert m["kid"] == pytest.approx(own["kid"], rel=1e-6, abs=1e-9) and m["precision"] == own["precision"]
    else:
        assert record["format"] == "mu and sigma (TTUR, pytorch-fid, EDM)"
        assert m["kid"] is None and "precision" not in m


@pytest.mark.parametrize("arrays, message", [
    ({"means": np.zeros(8)}, "holds means; it must hold mu and sigma (TTUR, pytorch-fid, EDM) or pool_3 features "
                             "(score_sde)"),
    ({"mu": np.zeros(5), "sigma": np.eye(5)}, "mu (5,) and sigma (5, 5) do not fit the extractor's"),
    ({"pool_3": np.full((4, 5), 1.0)}, "pool_3 has shape (4, 5), expected (N >= 2,"),
    ({"mu": "nan", "sigma": "nan"}, "non-finite or non-numeric"),
])
def test_a_bad_file_is_one_line_before_any_sample(tiny_run, tmp_path, capfd, arrays, message):
    if isinstance(arrays.get("mu"), str):                 # the FID Inception's 2048 features, one of them NaN
        arrays = {"mu": np.full(2048, np.nan), "sigma": np.eye(2048)}
    bad = tmp_path / "bad.npz"
    np.savez(bad, **arrays)
    out = tmp_path / "ev"
    capfd.readouterr()
    assert evaluate(tiny_run, out, "--config", overlay(tmp_path, "bad", reference_stats=str(bad))) == 1
    err = capfd.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: eval.reference_stats {bad}") and message in err[-1], err
    assert not (out / "samples.npz").exists() and not list(out.glob("batches/*.npy"))


def test_fid_stats_refuses_to_overwrite(tiny_run, tmp_path, capsys):
    existing = tmp_path / "mine.npz"
    existing.write_bytes(b"mine")
    assert fid_stats.main(["--doc", "e", "--run", str(tiny_run / "run"), "--format", "pool_3", "-o",
                           str(existing)]) == 1
    assert "(it exists)" in capsys.readouterr().err and existing.read_bytes() == b"mine"
