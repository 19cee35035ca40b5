"""fedforget: a federated-unlearning simulator on Flower, PyTorch and Ray."""

from fedforget.analysis import Results, export, load
from fedforget.analysis.many_models import ManyModels, many_models
from fedforget.config import ConfigError, Scenario, load_scenario
from fedforget.runner import RunResult, resume, run, run_many, run_seeds
from fedforget.sweep import sweep

__version__ = "0.1.0"
__all__ = ["ConfigError", "ManyModels", "Results", "RunResult", "export", "load", "many_models", "Scenario", "load_scenario", "resume", "run", "run_many", "run_seeds", "sweep", "__version__"]
