"""ToyRunner: the 2-D experiments of the paper, Figure 2 (score estimates are poor where data is scarce) and
Figure 3 (annealing fixes the mode weights that plain Langevin dynamics gets wrong), measured as well as drawn.

Two MLPs are fitted on fresh samples of ``toy.dataset``: a plain score model by sliced score matching (Fig. 2) and a
noise-conditional one (NCSN) by annealed DSM.  The sampling part compares i.i.d. samples, Langevin and annealed
Langevin with the exact score and with the learned models.  This file says what the experiment is (the mixture, the
levels, the two networks and their objectives, where chains start); its flows, training and the report, are
commands/toy.py's.
"""
from contextlib import contextmanager

import torch

from commands.toy import toy_test, toy_train
from datasets.toy import toy_distribution
from evaluation.toy_metrics import annealed_fisher_divergence, fisher_divergence
from losses import anneal_dsm_per_example, sliced_per_example
from models import ToyNCSN, ToyScore
from reports.figures import ToyFigures
from runners.base import Runner
from sampling import anneal_langevin_dynamics, geometric_sigmas, unconditional
from training.loop import Objective

METHODS = ("iid", "langevin", "annealed_langevin", "learned_langevin", "learned_annealed_langevin")

class ToyRunner(Runner):
    resumable = False           # two networks trained in turn, each into its own subfolder; training takes a minute
    flows = {"train": toy_train, "test": toy_test}

    def __init__(self, ctx, config, device):
        super().__init__(ctx, config, device)
        t = config.toy
        self.toy = t
        self.dist = toy_distribution(t)
        self.seed = ctx.seed if t.seed is None else t.seed
        self.sigmas = geometric_sigmas(t.sigma_begin, t.sigma_end, t.num_sigmas, device=device)   # (L,) descending
        self.figures = ToyFigures(self.dist, t.bound, device, self.sigmas)
        # the paper's form x += lr/2 s + sqrt(lr) z is sampling/langevin.py's with a = lr/2
        self.step_lr = t.langevin_lr / 2

    def networks(self):
        """[(name, network, Objective, seed of its data streams)]: the score model (Fig. 2) and the NCSN, in the
        order they are trained; the test losses are Fisher divergences to the exact score."""
        t, sigmas, dist = self.config.training, self.sigmas, self.dist

        def ssm_loss(model, X):                       # official: loss, *_ = sliced_score_estimation_vr(...)
            return sliced_per_example(model, X, n_particles=t.n_particles)

        def dsm_loss(model, X):
            labels = torch.randint(0, len(sigmas), (X.shape[0],), device=X.device)
            return anneal_dsm_per_example(model, X, labels, sigmas, t.anneal_power)

        return [("score_model", ToyScore(self.toy.hidden),
                 Objective(loss_fn=ssm_loss, test_fn=lambda model, X: fisher_divergence(model, dist.score, X),
                           test_name="test_fisher_divergence"), self.seed),
                ("ncsn", ToyNCSN(sigmas, self.toy.hidden),
                 Objective(loss_fn=dsm_loss, test_name="test_fisher_divergence", sigmas=sigmas,
                           test_fn=lambda model, X: annealed_fisher_divergence(model, dist.score, X, sigmas)),
                 self.seed + 2)]

    def start(self, n):
        """``n`` chain starts, U[-bound, bound]^2, from the global random state."""
        return (torch.rand(n, 2, device=self.device) * 2 - 1) * self.toy.bound

    def sample_all(self, score_model, ncsn):
        """{method: samples (n, 2)} for METHODS; all chains start from the same U[-bound, bound]^2 draw."""
        t, dist, sigmas = self.toy, self.dist, self.sigmas
        x0 = self.start(t.n_samples)
        exact = dist.level_score(sigmas)
        plain = dict(n_steps_each=t.langevin_steps, step_lr=self.step_lr)   # plain Langevin: one level, data's score
        annealed = dict(n_steps_each=t.n_steps_each, step_lr=self.step_lr)
        out = {"iid": dist.sample(t.n_samples).to(self.device),
               "langevin": anneal_langevin_dynamics(unconditional(dist.score), x0, [0.0], **plain),
               # a_i = step_lr (sigma_i / sigma_L)^2: the official lr_i = lr sigma_i^2 / sigma_L^2 in paper form
               "annealed_langevin": anneal_langevin_dynamics(exact, x0, sigmas, **annealed),
               "learned_langevin": anneal_langevin_dynamics(unconditional(score_model), x0, [0.0], **plain),
               "learned_annealed_langevin": anneal_langevin_dynamics(ncsn, x0, sigmas, **annealed)}
        return {k: v.detach().cpu() for k, v in out.items()}

    @contextmanager
    def threads(self):
        """One intra-op thread on CPU: for these tiny 2-D batches more threads only add synchronisation (on a busy
        2-core machine a sliced-score-matching step took 69 ms with 2 threads and 1.8 ms with 1)."""
        before = torch.get_num_threads()
        if self.device.type == "cpu":
            torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(before)
