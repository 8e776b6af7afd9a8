"""The flows of the ToyRunner (paper Figures 2 and 3).  Training fits its two networks in turn with the one
``train_loop`` (each into its own subfolder of the run), draws Figure 2 and runs the sampling report; ``--test`` runs
the sampling report again from the saved networks into ``-o``.  The report: ``figure3.png``, the GIF of the learned
score field from the largest to the smallest noise level, ``samples.pth`` and ``metrics.json`` (mode weights, MMD).
"""
import logging
from pathlib import Path

import torch

from atomic import write_json
from datasets import FreshSamples
from evaluation.toy_metrics import mmd2, mode_metrics
from reports.outputs import prepare_output_folder, save_tensor
from training.loop import train_loop
from training.setup import TrainSetup, make_optimizer
from training.tb_log import TensorboardLog


def toy_train(ctx, runner):
    with runner.threads():
        torch.manual_seed(runner.seed)
        cfg, log, tb = runner.config, Path(ctx.log), Path(ctx.tb)
        models = {}
        for name, model, objective, seed in runner.networks():
            logging.info("training the %s (%s) on %s", name, "sliced SM" if name == "score_model" else "annealed DSM",
                         runner.dist.name)
            (log / name).mkdir()
            model = runner.new_model(model)
            setup = TrainSetup(model=model, optimizer=make_optimizer(model.parameters(), cfg.optim),
                               train_stream=FreshSamples(runner.dist, cfg.training.batch_size, seed),
                               test_stream=FreshSamples(runner.dist, cfg.training.batch_size, seed + 1), config=cfg,
                               log_dir=log / name, writer=TensorboardLog(tb / name), device=runner.device)
            train_loop(setup, objective)                # closes the writer
            models[name] = model.eval()

        figures = log / "figures"
        figures.mkdir()
        numbers = runner.figures.figure2(models["score_model"], figures / "figure2.png")
        write_json(log / "score_error.json", {"score_model": numbers})
        logging.info("score error: %s", numbers)
        sampling_report(runner, models["score_model"], models["ncsn"], figures, log / "metrics.json")


def toy_test(ctx, runner):
    with runner.threads():
        log = Path(ctx.log)
        models = [runner.trained_model(log / name / "checkpoint.pth", model)[0]
                  for name, model, _, _ in runner.networks()]
        folder = prepare_output_folder(ctx.image_folder, ctx.overwrite)
        sampling_report(runner, *models, folder, folder / "metrics.json")


def sampling_report(runner, score_model, ncsn, folder, metrics_path):
    """Every method's samples (``runner.sample_all``), their mode weights and MMDs, Figure 3 and the score GIF."""
    torch.manual_seed(runner.seed + 4)              # the same chains after training and with --test
    samples = runner.sample_all(score_model, ncsn)
    reference = runner.dist.sample(runner.toy.n_samples)             # independent i.i.d. set for the MMD
    sigma_end = float(runner.sigmas[-1])
    perturbed = reference + sigma_end * torch.randn_like(reference)  # annealed chains target p_{sigma_L}
    metrics = {}
    for m in samples:
        metrics[m] = mode_metrics(runner.dist, samples[m], reference)
        if "annealed" in m:
            metrics[m]["mmd2_to_perturbed"] = round(mmd2(samples[m], perturbed), 5)
        logging.info("%s: mode weights %s (true %s), %d/%d modes, mmd2 %.4g", m, metrics[m]["mode_weights"],
                     metrics[m]["true_weights"], metrics[m]["modes_covered"], runner.dist.n_modes,
                     metrics[m]["mmd2"])
    write_json(metrics_path, metrics)
    runner.figures.figure3(samples, metrics, Path(folder) / "figure3.png")
    runner.figures.score_field_gif(ncsn, Path(folder) / "score_field.gif")
    save_tensor(samples, Path(folder) / "samples.pth")
    logging.info("wrote %s, %s and the figures in %s", metrics_path, Path(folder) / "samples.pth", folder)
