"""The trainer on signals (zsq_probe.training.loop, issue 15): SIGUSR1 stops it after the epoch's checkpoint and the
resume is bit-identical to an uninterrupted run; the handlers are installed in the main thread only."""

import os
import signal
import threading

import pytest
from tiny_runs import ONLY, assert_same_tables, reference_run, tiny_jobs

from zsq_probe.rundir.store import RunDir


@pytest.fixture
def one_thread():
    """Both runs of a bit-identity comparison with one intra-op thread, whatever earlier tests (Ray) left set."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def test_sigusr1_stops_after_the_epoch_checkpoint_and_the_resume_is_bit_identical(tmp_path, digits_teacher, one_thread):
    from zsq_probe.events import Observer
    from zsq_probe.runs import train
    from zsq_probe.training import TrainingInterrupted

    job = tiny_jobs(tmp_path / "a", epochs=3, only=ONLY[:1])[0]

    class Preempt(Observer):  # the signal arrives in the middle of epoch 2
        def on_step(self, ctx, event):
            if event.epoch == 2 and event.step == 0:
                os.kill(os.getpid(), signal.SIGUSR1)

    before = signal.getsignal(signal.SIGUSR1), signal.getsignal(signal.SIGTERM)
    from zsq_probe.probes import build_probes

    cfg = job.config()
    with pytest.raises(TrainingInterrupted) as info:
        train(cfg, job.path, observers=build_probes(cfg) + [Preempt()], progress=False)
    assert info.value.epoch == 2 and info.value.signame == "SIGUSR1"
    assert (signal.getsignal(signal.SIGUSR1), signal.getsignal(signal.SIGTERM)) == before  # handlers put back
    run = RunDir(job.path)
    assert sorted(run.checkpoints()) == [0, 1, 2]  # epoch 2 finished and checkpointed, never cut mid-epoch
    assert list(run.read_table("metrics")["epoch"]) == [1, 2]
    assert job.status() == "partial"

    train(cfg, job.path, resume=True, progress=False)
    assert_same_tables(run, reference_run(job, tmp_path / "ref"))


def test_signal_handlers_are_only_installed_in_the_main_thread():
    from zsq_probe.training.loop import stop_on_signals

    seen = {}

    def body():
        with stop_on_signals() as state:
            seen["handler"] = signal.getsignal(signal.SIGUSR1)
            seen["state"] = state

    before = signal.getsignal(signal.SIGUSR1)
    t = threading.Thread(target=body)
    t.start()
    t.join()
    assert seen["handler"] == before and seen["state"]["signal"] is None
