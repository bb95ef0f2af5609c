"""Run logging: metrics.jsonl (always), TensorBoard (default), W&B (when asked), and loss.png."""

from __future__ import annotations

import json
import os
from pathlib import Path

from vlmtune.errors import ConfigError


class MetricsLogger:
    def __init__(self, run_dir: Path, report_to, *, enabled: bool = True, run_name: str | None = None, config: dict | None = None):
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.tb = None
        self.wandb = None
        if not enabled:
            return
        reports = [report_to] if isinstance(report_to, str) else list(report_to or [])
        if "tensorboard" in reports:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))
        if "wandb" in reports:
            try:
                import wandb
            except ImportError:
                raise ConfigError("`train.report_to` includes wandb but wandb is not installed: `pip install wandb`, "
                                  "or drop it from `train.report_to`.") from None
            self.wandb = wandb.init(project=os.environ.get("WANDB_PROJECT", "vlmtune"), name=run_name, config=config,
                                    dir=str(self.run_dir))

    def log(self, step: int, values: dict, *, file: str = "metrics.jsonl") -> None:
        if not self.enabled:
            return
        with open(self.run_dir / file, "a") as f:
            f.write(json.dumps({"step": step, **values}) + "\n")
        scalars = {k: v for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if self.tb is not None:
            for k, v in scalars.items():
                self.tb.add_scalar(k, v, step)
            self.tb.flush()
        if self.wandb is not None:
            self.wandb.log(scalars, step=step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_loss(run_dir: Path) -> Path | None:
    """Write RUN/loss.png from metrics.jsonl (train loss, and eval loss when present)."""
    rows = read_metrics(run_dir)
    train = [(r["step"], r["loss"]) for r in rows if isinstance(r.get("loss"), (int, float))]
    evals = [(r["step"], r["eval_loss"]) for r in rows if isinstance(r.get("eval_loss"), (int, float))]
    if not train and not evals:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    if train:
        ax.plot(*zip(*train), label="train loss")
    if evals:
        ax.plot(*zip(*evals), "o-", label="eval loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(Path(run_dir).name)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(run_dir) / "loss.png"
    tmp = out.with_suffix(".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, out)
    return out
