"""The reporting protocol of --eval: eval.n_seeds independent sample sets (each FID, the minimum and the mean),
the real-data floor at the same N (eval.floor), and improved precision and recall in metrics.json."""
import json

import numpy as np
import pytest
import yaml

import main as cli
from evaluation.export import batch_seed

pytest_plugins = ["test_eval_cli"]        # its fixture tiny_run: a tiny trained run with the stand-in Inception
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:FutureWarning")


def evaluate(root, out, overlay):
    return cli.main(["--eval", "--doc", "e", "--run", str(root / "run"), "-o", str(out), "--config", str(overlay)])


def test_seeds_floor_and_precision_recall(tiny_run, tmp_path):
    overlay = tmp_path / "protocol.yml"
    overlay.write_text(yaml.safe_dump({"eval": {"n_seeds": 3, "floor": True}}))
    out = tmp_path / "ev"
    assert evaluate(tiny_run, out, overlay) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["seeds"] == [1234, 1235, 1236] and len(m["fid_per_seed"]) == 3
    assert m["fid_per_seed"][0] == m["fid"] and m["fid_min"] == min(m["fid_per_seed"])
    assert m["fid_mean"] == pytest.approx(np.mean(m["fid_per_seed"]), rel=1e-12)
    assert len(set(m["fid_per_seed"])) == 3                               # independent sets, not copies
    first = np.load(out / "samples.npz")["samples"]
    other = np.load(out / "seed_1235" / "samples.npz")["samples"]
    assert first.shape == other.shape and not np.array_equal(first, other)
    assert batch_seed(1234, 1) != batch_seed(1235, 0)                     # no batch shared between the sets
    # the first set is exactly what a single-seed --eval writes
    single = tmp_path / "single"
    plain = tmp_path / "plain.yml"
    plain.write_text(yaml.safe_dump({"eval": {"n_seeds": 1}}))
    assert evaluate(tiny_run, single, plain) == 0
    assert np.array_equal(np.load(single / "samples.npz")["samples"], first)
    assert json.loads((single / "metrics.json").read_text())["fid"] == m["fid"]
    # the floor: as many held-out (test) digits as samples, against the same reference
    floor = m["floor"]
    assert floor["split"] == "test" and floor["n"] == m["n_samples"] == 10
    assert floor["fid"] > 0 and np.isfinite(floor["kid"])
    # improved precision and recall in [0, 1], for the samples and for the real images
    for record in (m, floor):
        assert 0 <= record["precision"] <= 1 and 0 <= record["recall"] <= 1
    assert m["prc_k"] == 3


def test_n_seeds_is_checked():
    from configs import config_from_dict
    from errors import ConfigError
    with pytest.raises(ConfigError, match="eval.n_seeds must be > 0, got 0"):
        config_from_dict({"eval": {"n_seeds": 0}})
