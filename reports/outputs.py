"""What runs write for people: log lines (through tqdm, so progress bars stay intact), image grids, GIFs, sample
folders, and the output folder of ``--test``.  Used by main.py and the runners; nothing here trains or evaluates."""
import csv
import io
import logging
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from atomic import atomic_write
from errors import UserError
from evaluation.export import DIVERGENCE_HINT, check_diverged

LOG_FORMAT = "%(levelname)s - %(filename)s - %(asctime)s - %(message)s"


class _TqdmHandler(logging.StreamHandler):
    """Log lines printed through tqdm so that they do not break progress bars."""

    def emit(self, record):
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:       # logging's own contract: report handler errors, never raise
            self.handleError(record)


def setup_logging(level, log_file=None):
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    handlers = [_TqdmHandler()]
    if log_file is not None:
        try:
            handlers.append(logging.FileHandler(log_file))
        except OSError as e:
            raise UserError(f"cannot write the run's log {log_file}: {e.strerror or e}") from e
    for h in handlers:
        h.setFormatter(logging.Formatter(LOG_FORMAT))
        root.addHandler(h)
    root.setLevel(level)


def log_to_file(level, message):
    """Record why the run stopped at the end of its stdout.txt (the terminal gets the message as one plain line)."""
    for h in logging.getLogger().handlers:
        if isinstance(h, logging.FileHandler):
            h.handle(logging.LogRecord("main", level, __file__, 0, message, None, None))


def to_grid(x, nrow):
    """(B, C, H, W) in [0, 1] -> one (3, H', W') grid; tiny images (< 32 px) are upscaled (nearest) for viewing."""
    from torchvision.utils import make_grid
    x = x.detach().float().cpu()
    scale = max(1, 32 // x.shape[-1])
    if scale > 1:
        x = torch.nn.functional.interpolate(x, scale_factor=scale, mode="nearest")
    return make_grid(x, nrow=nrow, padding=2)


def grid_image(x, nrow):
    from PIL import Image
    grid = to_grid(x, nrow)
    arr = grid.mul(255).add_(0.5).clamp_(0, 255).permute(1, 2, 0).to(torch.uint8).numpy()
    return Image.fromarray(arr)


def save_image(image, path, **kwargs):
    """Write a PIL image (its format from the file name) through the one atomic write: a full disk is one error
    line and leaves no partial file."""
    from PIL import Image
    kind = Image.registered_extensions()[Path(path).suffix.lower()]
    atomic_write(path, lambda f: image.save(f, format=kind, **kwargs))


def save_tensor(value, path):
    """``torch.save`` through the one atomic write."""
    atomic_write(path, lambda f: torch.save(value, f))


def save_figure(fig, path, **kwargs):
    """A matplotlib figure (its format from the file name) through the one atomic write."""
    atomic_write(path, lambda f: fig.savefig(f, format=Path(path).suffix[1:], **kwargs))


def save_grid(x, path, nrow):
    save_image(grid_image(x, nrow), path)


def save_gif(frames, path, duration=40):
    """Write PIL frames as a looping GIF."""
    save_image(frames[0], path, save_all=True, append_images=frames[1:], duration=duration, loop=0)


def sample_to_folder(sampler, x, *, total, folder, data_cfg, sampling_cfg, nrow, desc, name="samples", grid=None,
                     hint=DIVERGENCE_HINT):
    """Run ``sampler(x, callback) -> x`` (a sampling/ sampler, bound to its score) with a progress bar; write its outputs.

    x: (N, C, H, W) initial state; ``total`` is the number of sampler steps.  Writes into ``folder``:
    ``{name}.png`` (grid of the final samples), ``{name}.pth`` (the final samples, (N, C, H, W) in [0, 1]) and
    ``movie.gif`` (the chain, every ``sampling.gif_every``-th step); with ``sampling.save_all_frames`` also
    ``image_{i}.png`` / ``image_raw_{i}.pth`` for every step.  ``grid(samples) -> (images, nrow)`` changes what the PNG
    shows (inpainting).  Returns the final samples on the CPU.
    """
    from datasets import inverse_data_transform
    folder, smp = Path(folder), sampling_cfg
    frames = [grid_image(inverse_data_transform(x, data_cfg), nrow)]
    bar = tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True, mininterval=1.0)

    def callback(info):
        i, x_i = info["i"], info["x"]
        bar.update(1)
        if (i + 1) % smp.gif_every == 0 or i + 1 == total:
            frames.append(grid_image(inverse_data_transform(x_i, data_cfg), nrow))
        if smp.save_all_frames:
            img = inverse_data_transform(x_i, data_cfg).cpu()
            save_grid(img, folder / f"image_{i}.png", nrow)
            save_tensor(img, folder / f"image_raw_{i}.pth")

    try:
        x = sampler(x, callback)
    finally:
        bar.close()
    check_diverged(x, note="; nothing written", hint=hint)
    samples = inverse_data_transform(x, data_cfg).cpu()                               # (N, C, H, W)
    images, grid_nrow = grid(samples) if grid is not None else (samples, nrow)
    save_grid(images, folder / f"{name}.png", grid_nrow)
    save_tensor(samples, folder / f"{name}.pth")
    save_gif(frames, folder / "movie.gif")
    logging.info("wrote %s, %s and %s", folder / f"{name}.png", folder / f"{name}.pth", folder / "movie.gif")
    return samples


def write_preview(images, path, writer, step):
    """A preview grid of (N, C, H, W) images in [0, 1] during training: a PNG at ``path`` and, with a tensorboard
    ``writer``, the image ``samples`` at ``step``.  Non-finite images (an early, unstable network) are shown clamped."""
    images = torch.nan_to_num(images.detach().float(), nan=0.0).clamp(0, 1).cpu()
    nrow = max(1, round(len(images) ** 0.5))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_grid(images, path, nrow)
    if writer is not None:
        writer.add_image("samples", to_grid(images, nrow), global_step=step)


def prepare_output_folder(folder, overwrite):
    """Create the sample folder; refuse to write into a non-empty one unless ``overwrite``."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"output folder {folder} exists and is not a folder")
    if folder.is_dir() and any(folder.iterdir()) and not overwrite:
        raise UserError(f"output folder {folder} is not empty; choose another with -o or pass --overwrite")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write_test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise UserError(f"cannot write to output folder {folder}: {e.strerror or e}") from e
    return folder


# ------------------------------------------------------------------------------------------------ loss logs

LOSS_LOG = "losses.csv"
LOGGED_TAGS = ("loss", "test_loss")


class LossLog:
    """A tensorboard writer that also appends the ``loss`` and ``test_loss`` scalars to a CSV file (step,tag,value).

    On resume (``start_step`` > 0) rows after ``start_step`` are dropped, as tensorboard's ``purge_step`` does.
    """

    def __init__(self, writer, path, start_step=0):
        self.writer, self.path = writer, Path(path)
        rows = [r for r in read_rows(self.path) if int(r[0]) <= start_step] if start_step else []
        kept = io.StringIO(newline="")
        csv.writer(kept).writerows([("step", "tag", "value"), *rows])
        atomic_write(self.path, kept.getvalue().encode())   # the kept rows replace the old file in one rename
        self.file = open(self.path, "a", newline="")
        self.csv = csv.writer(self.file)

    def __getattr__(self, name):                            # everything else is the tensorboard writer's
        return getattr(self.writer, name)

    def add_scalar(self, tag, value, global_step=None):
        self.writer.add_scalar(tag, value, global_step=global_step)
        if tag in LOGGED_TAGS:
            self.csv.writerow((global_step, tag, repr(float(value))))

    def flush(self):
        self.writer.flush()
        self.file.flush()

    def close(self):
        self.writer.close()
        self.file.close()


def read_rows(path):
    """Rows (step, tag, value) of a loss log, as strings; [] if the file does not exist."""
    if not Path(path).is_file():
        return []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"cannot read loss log {path}: {getattr(e, 'strerror', None) or e}") from e
    if not rows or rows[0] != ["step", "tag", "value"]:
        raise UserError(f"{path} is not a loss log (expected the header step,tag,value)")
    return [r for r in rows[1:] if len(r) == 3]       # a row cut by a crash is skipped


def read_loss_log(path):
    """{tag: (steps, values)} from a loss log; non-finite values are kept (they are what Figure 1 is about)."""
    out = {}
    for step, tag, value in read_rows(path):
        steps, values = out.setdefault(tag, ([], []))
        try:
            steps.append(int(step))
            values.append(float(value))
        except ValueError as e:
            raise UserError(f"{path} has a bad row {step},{tag},{value}") from e
    return out
