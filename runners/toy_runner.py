"""ToyRunner: the 2-D experiments of the paper, Figure 2 (score estimates are poor where data is scarce) and
Figure 3 (annealing fixes the mode weights that plain Langevin dynamics gets wrong), measured as well as drawn.

``train()`` fits two MLPs on fresh samples of ``toy.dataset`` with the one ``train_loop``: a plain score model by sliced
score matching (Fig. 2) and a noise-conditional one (NCSN) by annealed DSM; then draws Figure 2 and runs the sampling
part.  ``test()`` reruns the sampling part from the saved models into ``-o``.  The sampling part compares i.i.d.
samples, Langevin and annealed Langevin with the exact score and with the learned models: ``figure3.png``, the GIF of
the learned score field from the largest to the smallest noise level, and ``metrics.json`` (mode weights, MMD).
"""
import json
import logging
from contextlib import contextmanager
from pathlib import Path

import torch

from datasets import FreshSamples
from datasets.toy import toy_distribution
from evaluation.toy_metrics import annealed_fisher_divergence, fisher_divergence, mmd2, mode_metrics
from losses import anneal_dsm_per_example, sliced_per_example
from models import ToyNCSN, ToyScore
from runners.base import Runner
from runners.figures import ToyFigures
from runners.outputs import prepare_output_folder
from sampling import anneal_langevin_dynamics, geometric_sigmas, unconditional
from training.loop import Objective, train_loop
from training.setup import TrainSetup, make_optimizer

METHODS = ("iid", "langevin", "annealed_langevin", "learned_langevin", "learned_annealed_langevin")


class ToyRunner(Runner):
    resumable = False           # two networks trained in turn, each into its own subfolder; training takes a minute
    def __init__(self, args, config, device):
        super().__init__(args, config, device)
        self.toy = config.toy
        self.dist = toy_distribution(config.toy)
        self.seed = args.seed if config.toy.seed is None else config.toy.seed
        t = config.toy
        self.sigmas = geometric_sigmas(t.sigma_begin, t.sigma_end, t.num_sigmas, device=device)   # (L,) descending
        self.figures = ToyFigures(self.dist, t.bound, device, self.sigmas)

    # ----------------------------------------------------------------------------------------------- training

    def train(self):
        with _cpu_threads(self.device):
            self._train()

    def test(self):
        with _cpu_threads(self.device):
            self._test()

    def _train(self):
        from tensorboardX import SummaryWriter
        torch.manual_seed(self.seed)
        cfg, log, tb = self.config, Path(self.args.log), Path(self.args.tb)
        t, sigmas, dist = cfg.training, self.sigmas, self.dist

        def ssm_loss(model, X):                       # official: loss, *_ = sliced_score_estimation_vr(...)
            return sliced_per_example(model, X, n_particles=t.n_particles)

        def dsm_loss(model, X):
            labels = torch.randint(0, len(sigmas), (X.shape[0],), device=X.device)
            return anneal_dsm_per_example(model, X, labels, sigmas, t.anneal_power)

        def score_fisher(model, X):                   # test losses: Fisher divergences to the exact score
            return fisher_divergence(model, dist.score, X)

        def ncsn_fisher(model, X):
            return annealed_fisher_divergence(model, dist.score, X, sigmas)

        models = {}
        for name, model, loss_fn, test_fn, seed in (
                ("score_model", ToyScore(self.toy.hidden), ssm_loss, score_fisher, self.seed),
                ("ncsn", ToyNCSN(sigmas, self.toy.hidden), dsm_loss, ncsn_fisher, self.seed + 2)):
            logging.info("training the %s (%s) on %s", name, "sliced SM" if name == "score_model" else "annealed DSM",
                         dist.name)
            (log / name).mkdir()
            model = self.new_model(model)
            writer = SummaryWriter(str(tb / name))
            setup = TrainSetup(model=model, optimizer=make_optimizer(model.parameters(), cfg.optim),
                               train_stream=FreshSamples(dist, t.batch_size, seed),
                               test_stream=FreshSamples(dist, t.batch_size, seed + 1), config=cfg,
                               log_dir=log / name, writer=writer, device=self.device)
            train_loop(setup, Objective(loss_fn=loss_fn, test_fn=test_fn, test_name="test_fisher_divergence",
                                        sigmas=sigmas if name == "ncsn" else None))    # closes the writer
            models[name] = model.eval()

        figures = log / "figures"
        figures.mkdir()
        numbers = self.figures.figure2(models["score_model"], figures / "figure2.png")
        (log / "score_error.json").write_text(json.dumps({"score_model": numbers}, indent=2) + "\n")
        logging.info("score error: %s", numbers)
        self.sample_and_report(models["score_model"], models["ncsn"], figures, log / "metrics.json")

    def _test(self):
        log = Path(self.args.log)
        models = []
        for name, model in (("score_model", ToyScore(self.toy.hidden)), ("ncsn", ToyNCSN(self.sigmas,
                                                                                        self.toy.hidden))):
            models.append(self.trained_model(log / name / "checkpoint.pth", model)[0])
        folder = prepare_output_folder(self.args.image_folder, self.args.overwrite)
        self.sample_and_report(*models, folder, folder / "metrics.json")

    # ------------------------------------------------------------------------------------------------ sampling

    def sample_all(self, score_model, ncsn):
        """{method: samples (n, 2)} for METHODS; all chains start from the same U[-bound, bound]^2 draw."""
        t, dist, sigmas = self.toy, self.dist, self.sigmas
        step_lr = t.langevin_lr / 2        # paper form x += lr/2 s + sqrt(lr) z  ==  sampling/langevin.py with a = lr/2
        x0 = (torch.rand(t.n_samples, 2, device=self.device) * 2 - 1) * t.bound
        exact = dist.level_score(sigmas)
        plain = dict(n_steps_each=t.langevin_steps, step_lr=step_lr)      # plain Langevin: one level, data's score
        annealed = dict(n_steps_each=t.n_steps_each, step_lr=step_lr)
        out = {"iid": dist.sample(t.n_samples).to(self.device),
               "langevin": anneal_langevin_dynamics(unconditional(dist.score), x0, [0.0], **plain),
               # a_i = step_lr (sigma_i / sigma_L)^2: the official lr_i = lr sigma_i^2 / sigma_L^2 in paper form
               "annealed_langevin": anneal_langevin_dynamics(exact, x0, sigmas, **annealed),
               "learned_langevin": anneal_langevin_dynamics(unconditional(score_model), x0, [0.0], **plain),
               "learned_annealed_langevin": anneal_langevin_dynamics(ncsn, x0, sigmas, **annealed)}
        return {k: v.detach().cpu() for k, v in out.items()}

    def sample_and_report(self, score_model, ncsn, folder, metrics_path):
        torch.manual_seed(self.seed + 4)            # the same chains after training and with --test
        samples = self.sample_all(score_model, ncsn)
        reference = self.dist.sample(self.toy.n_samples)                 # independent i.i.d. set for the MMD
        sigma_end = float(self.sigmas[-1])
        perturbed = reference + sigma_end * torch.randn_like(reference)  # annealed chains target p_{sigma_L}
        metrics = {}
        for m in METHODS:
            metrics[m] = mode_metrics(self.dist, samples[m], reference)
            if "annealed" in m:
                metrics[m]["mmd2_to_perturbed"] = round(mmd2(samples[m], perturbed), 5)
            logging.info("%s: mode weights %s (true %s), %d/%d modes, mmd2 %.4g", m, metrics[m]["mode_weights"],
                         metrics[m]["true_weights"], metrics[m]["modes_covered"], self.dist.n_modes,
                         metrics[m]["mmd2"])
        Path(metrics_path).write_text(json.dumps(metrics, indent=2) + "\n")
        self.figures.figure3(samples, metrics, Path(folder) / "figure3.png")
        self.figures.score_field_gif(ncsn, Path(folder) / "score_field.gif")
        torch.save(samples, Path(folder) / "samples.pth")
        logging.info("wrote %s, %s and the figures in %s", metrics_path, Path(folder) / "samples.pth", folder)


@contextmanager
def _cpu_threads(device):
    """One intra-op thread on CPU: for these tiny 2-D batches more threads only add synchronisation (on a busy 2-core
    machine a sliced-score-matching step took 69 ms with 2 threads and 1.8 ms with 1)."""
    before = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
