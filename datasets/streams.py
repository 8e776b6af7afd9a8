"""Resumable batch streams for the training loop: shuffled batches of a data set (:class:`BatchStream`) and fresh
i.i.d. samples of a distribution (:class:`FreshSamples`).  Each saves and restores its exact position."""
import torch
from torch.utils.data import DataLoader, TensorDataset

from errors import UserError


def _ignore_sigint(_worker_id):
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the main process handles Ctrl-C and stops cleanly


class BatchStream:
    """Endless shuffled batches whose position (epoch, batch) can be saved and restored exactly.

    Epoch e is ordered by ``randperm(n, generator seeded with seed + e)``, so resuming at (e, b) yields exactly the
    batches an uninterrupted run would have seen, and never touches the global random state.  (A DataLoader's own
    shuffling draws from the global generator, which would change the noise drawn after a resume.)
    Tensor data sets are sliced directly; others go through a DataLoader with this order.

    With ``world_size`` > 1 (one stream per training process) every process computes the same order and yields
    only its contiguous share ``rank`` of each global batch (``tensor_split``: sizes differ by at most one); a final
    partial batch too small to give every process an example is dropped.  The state is that of the global stream.
    """

    def __init__(self, dataset, batch_size, seed, drop_last=False, num_workers=0, pin_memory=False, rank=0,
                 world_size=1):
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed
        self.drop_last, self.num_workers, self.pin_memory = drop_last, num_workers, pin_memory
        self.rank, self.world_size = rank, world_size
        self.epoch, self.batch = 0, 0
        n = len(dataset)
        self.batches_per_epoch = n // batch_size if drop_last or 0 < n % batch_size < world_size \
            else -(-n // batch_size)
        if self.batches_per_epoch == 0:
            raise UserError(f"batch size {batch_size} is larger than the data set ({n} examples) with drop_last")
        self._it = None

    def worker_seed(self):
        """The seed of this epoch's DataLoader generator, from which its workers' random numbers (random flips) are
        seeded: ``seed + epoch`` in rank 0 (and a single process), shifted by ``1_000_003 * rank`` in the other
        ranks so that each process flips its own share differently.  (Without workers the transforms draw from the
        global generator, which main.py seeds per rank.)  The order of the examples never depends on the rank."""
        return self.seed + self.epoch + 1_000_003 * self.rank

    def state_dict(self):
        return {"epoch": self.epoch, "batch": self.batch}

    def load_state_dict(self, state):
        self.epoch, self.batch, self._it = int(state["epoch"]), int(state["batch"]), None

    def _epoch_batches(self):
        order = torch.randperm(len(self.dataset), generator=torch.Generator().manual_seed(self.seed + self.epoch))
        chunks = list(order.split(self.batch_size))
        if len(chunks[-1]) < (self.batch_size if self.drop_last else self.world_size):
            chunks = chunks[:-1]
        return [c.tensor_split(self.world_size)[self.rank].tolist() for c in chunks[self.batch:]]

    def _start_epoch(self):
        batches = self._epoch_batches()
        if isinstance(self.dataset, TensorDataset):
            tensors = self.dataset.tensors
            return (tuple(t[idx] for t in tensors) for idx in batches)
        loader = DataLoader(self.dataset, batch_sampler=batches, num_workers=self.num_workers,
                            pin_memory=self.pin_memory, worker_init_fn=_ignore_sigint,
                            generator=torch.Generator().manual_seed(self.worker_seed()),
                            persistent_workers=False)
        return iter(loader)

    def __iter__(self):
        return self

    def __next__(self):
        while True:
            if self._it is None:
                self._it = self._start_epoch()
            try:
                item = next(self._it)
            except StopIteration:
                self.epoch, self.batch, self._it = self.epoch + 1, 0, None
                continue
            self.batch += 1
            return item


class FreshSamples:
    """Endless batches ``(x, None)`` of fresh i.i.d. samples (the official toy training): a ``train_loop`` stream.

    It draws from its own generator, whose state is saved in checkpoints like a BatchStream's position.
    """

    epoch = 0                      # never ends: train_loop stops at training.n_iters

    def __init__(self, dist, batch_size, seed):
        self.dist, self.batch_size = dist, batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def __iter__(self):
        return self

    def __next__(self):
        return self.dist.sample(self.batch_size, self.generator), None

    def state_dict(self):
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state):
        self.generator.set_state(state["generator"].cpu())     # a generator state lives on the CPU
