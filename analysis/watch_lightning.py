r"""``watch`` as a Lightning callback: the same run directory from ``Trainer.fit`` (lightning is imported lazily, so
the rest of the package works without it).

    from analysis.watch_lightning import watch_callback
    trainer = lightning.Trainer(max_steps=1000, callbacks=[watch_callback("runs/lm", every=100)])

Hooks (Lightning 2.x, automatic optimization):
    on_fit_start               watch(pl_module, log_dir, ...) on the global-zero process
    on_before_optimizer_step   record(trainer.global_step): after the backward pass, before the weights change
    on_train_batch_end         note(step, loss=the training_step's loss) (Lightning does not hand the loss to the
                               hook above; load_run takes a record's loss from this note)
    on_fit_end / teardown      close()
With gradient accumulation the recorded gradient is the last micro-batch's (the run's messages say so).
"""
from __future__ import annotations

from rnn_models.config import ConfigError

from .watch import Watch


def _callback_base():
    try:
        from lightning.pytorch.callbacks import Callback
    except ImportError:
        try:
            from pytorch_lightning.callbacks import Callback
        except ImportError:
            raise ConfigError("watch_callback needs Lightning: pip install lightning==2.6.6 (or use watch() in a "
                              "plain torch loop)") from None
    return Callback


def watch_callback(log_dir: str, *, every: int = 100, module: str | None = None, num_lags: int = 12,
                   horizon_threshold: float = 1e-3, overwrite: bool = False):
    """A Lightning ``Callback`` that watches the LightningModule's recurrent module(s) into ``log_dir``."""
    Callback = _callback_base()

    class WatchCallback(Callback):
        def __init__(self):
            self.watch: Watch | None = None
            self.step: int | None = None

        def on_fit_start(self, trainer, pl_module):
            if trainer.is_global_zero:
                self.watch = Watch(pl_module, log_dir, every=every, module=module, num_lags=num_lags,
                                   horizon_threshold=horizon_threshold, overwrite=overwrite)

        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            if self.watch is not None:
                self.step = int(trainer.global_step)
                self.watch.record(self.step)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if self.watch is None or self.step is None:
                return
            loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
            if loss is not None:
                self.watch.note(self.step, loss=loss.detach() if hasattr(loss, "detach") else loss)

        def on_fit_end(self, trainer, pl_module):
            self.teardown(trainer, pl_module, "fit")

        def teardown(self, trainer, pl_module, stage):
            if self.watch is not None:
                self.watch.close()

    return WatchCallback()
