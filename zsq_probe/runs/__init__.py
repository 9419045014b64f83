"""Runs: the layer that composes training and probes (neither of which imports the other).

* `train` (`runs.training_run`): a config -> a run folder, the trainer with the probes the config names; it
  returns a `RunSummary` (`runs.summary`).
* `probe_run` (`runs.posthoc`): a probe measured from a run's saved checkpoints.
* `compare_runs` (`runs.compare`): the KD-versus-ZQ comparison of run folders read from disk.
* the demo (`runs.demo`): the embedded default's story end to end.
"""

from zsq_probe.runs.posthoc import probe_run
from zsq_probe.runs.summary import RunSummary
from zsq_probe.runs.training_run import train

__all__ = ["RunSummary", "probe_run", "train"]
