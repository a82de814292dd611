"""Fair hyperparameter tuning (``unlearnkit tune``): an Optuna study over a method's declared search space, on a
validation forget set drawn from the retain data only, then one evaluation of the chosen setting on the real one."""

from .objective import OBJECTIVES, TrialJob, band_distance, run_trial
from .study import TuneResult, Tuner, choose, load_study, pareto, tune
from .validation import PROTOCOL, validation_spec, validation_task

__all__ = ["OBJECTIVES", "PROTOCOL", "TrialJob", "TuneResult", "Tuner", "band_distance", "choose", "load_study", "pareto", "run_trial",
           "tune", "validation_spec", "validation_task"]
