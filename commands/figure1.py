"""``--test`` of the ScoreNetRunner (Figure 1): the checkpoint's training loss over the whole test set
(``test_loss.json``), and ``figure1.png`` from every run under ``<run>/logs/`` that has a loss log (one panel per
run, ordered by ``training.noise_std``)."""
import logging
from pathlib import Path

from torch.utils.data import DataLoader
from tqdm import tqdm

from atomic import write_json
from configs import load_config
from datasets import get_dataset
from errors import UserError
from reports.figures import plot_figure1
from reports.outputs import LOSS_LOG, prepare_output_folder, read_loss_log


def figure1(ctx, runner):
    cfg = runner.config
    path = Path(ctx.log) / "checkpoint.pth"
    model, state = runner.trained_model(path)
    folder = prepare_output_folder(ctx.image_folder, ctx.overwrite)

    _, test = get_dataset(cfg.data, ctx.run)
    loader = DataLoader(test, batch_size=cfg.training.batch_size, shuffle=False, num_workers=cfg.training.num_workers)
    loss_fn = runner.objective().loss_fn
    total, count = 0.0, 0
    for X, _ in tqdm(loader, desc="test loss", unit="batch", dynamic_ncols=True, mininterval=1.0):
        X = X.to(runner.device)
        per_example, _ = loss_fn(model, X)                        # SSM: gradients with respect to X, no no_grad
        total += per_example.mean().item() * X.shape[0]           # batch mean weighted by batch size
        count += X.shape[0]
    result = {"test_loss": total / count, "n_examples": count, "algo": cfg.training.algo,
              "noise_std": cfg.training.noise_std, "dataset": cfg.data.dataset, "step": state.get("step"),
              "checkpoint": str(path)}
    write_json(folder / "test_loss.json", result)
    logging.info("test loss of %s (step %s) over %d test images: %.6g", path, result["step"], count,
                 result["test_loss"])

    runs = find_loss_logs(ctx.run)
    if runs:
        plot_figure1(runs, folder / "figure1.png")
        logging.info("wrote %s (runs: %s)", folder / "figure1.png", ", ".join(doc for doc, _, _ in runs))
    else:
        logging.warning("no run under %s has a %s; figure1.png not drawn", Path(ctx.run) / "logs", LOSS_LOG)
    logging.info("wrote %s", folder / "test_loss.json")


def find_loss_logs(run_dir):
    """[(doc, config, log)] for every run under ``<run>/logs/`` with a config.yml and a losses.csv, by noise_std."""
    runs = []
    for folder in sorted(Path(run_dir, "logs").glob("*/")):
        if (folder / LOSS_LOG).is_file() and (folder / "config.yml").is_file():
            try:
                runs.append((folder.name, load_config(folder / "config.yml"), read_loss_log(folder / LOSS_LOG)))
            except UserError as e:                    # another run's broken files do not stop this one's test
                logging.warning("left out of the figure: %s", e)
    return sorted(runs, key=lambda r: (r[1].training.noise_std, r[0]))
