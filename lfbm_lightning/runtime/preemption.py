"""SIGTERM (a scheduler's preemption) and SIGINT (Ctrl-C) as one request to stop a run.

:class:`StopSignals` handles both signals for a whole training job and knows the phase the job
is in (:data:`PHASES`). In a phase that updates nothing (before training, the sanity check,
validation, the end figures, the evaluation after fit) a single-process job stops at once: the
handler raises :class:`StopRequested`. While training batches run (and in a DDP job) it only
records the request; the run stops after the current batch. Exit status 128 + the signal's
number: 143 for SIGTERM, 130 for SIGINT.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

import torch.distributed as dist
from pytorch_lightning.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)

SETUP, SANITY_CHECK, TRAINING, VALIDATION = "setup", "sanity_check", "training", "validation"
END_FIGURES, EVALUATION_AFTER_FIT = "end_figures", "evaluation_after_fit"
PHASES = (SETUP, SANITY_CHECK, TRAINING, VALIDATION, END_FIGURES, EVALUATION_AFTER_FIT)
"""A training job's phases, in order (``"phase"`` in ``metrics.json`` after a stop)."""
AFTER_TRAINING = (END_FIGURES, EVALUATION_AFTER_FIT)
"""Phases after the last epoch: the final ``last.ckpt`` is already written."""
HANDLED = (signal.SIGTERM, signal.SIGINT)


class StopRequested(SIGTERMException):
    """Raised by the handler in a phase that may stop at once. A ``SIGTERMException``, so that
    Lightning and :class:`~lfbm_lightning.callbacks.run_guards.CheckpointOnSigterm` treat it
    as the stop Lightning itself raises after a batch."""


class StopSignals:
    """The stop request of a job: the first SIGTERM/SIGINT received (``signum``) and the
    phase the job was in then (``received_in``); ``phase`` is the current phase."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.phase = SETUP
        self.received_in: str | None = None
        self._raised = False

    @property
    def stopping(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum or signal.SIGTERM).name

    @property
    def exit_code(self) -> int:
        """128 + the signal number, what shells and schedulers expect (143, 130)."""
        return 128 + int(self.signum or signal.SIGTERM)

    def _may_stop_at_once(self) -> bool:
        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        return self.phase != TRAINING and not distributed

    def enter(self, phase: str) -> None:
        """Enter ``phase``; a request received earlier stops the job now if the phase allows."""
        self.phase = phase
        if self.stopping and not self._raised and self._may_stop_at_once():
            self._stop()

    def _stop(self) -> None:
        self._raised = True  # once: the saving and cleanup that follow run undisturbed
        raise StopRequested(f"{self.name} during {self.phase}")

    def handle(self, signum: int, frame: FrameType | None) -> None:
        """The signal handler (both signals): record the first, stop at once if allowed."""
        if self.stopping:
            log.warning("%s received while stopping: ignored", signal.Signals(signum).name)
            return
        self.signum, self.received_in = signum, self.phase
        log.warning("%s received during %s: stopping", self.name, self.phase)
        if self._may_stop_at_once():
            self._stop()

    @contextmanager
    def installed(self) -> Iterator[StopSignals]:
        """Handle SIGTERM and SIGINT inside the block (main thread only); restore after."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {signum: signal.getsignal(signum) for signum in HANDLED}
        for signum in HANDLED:
            signal.signal(signum, self.handle)
        try:
            yield self
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
