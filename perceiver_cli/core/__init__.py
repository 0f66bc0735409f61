"""The Perceiver IO core: torch only; knows nothing of files' formats, terminals or Typer."""

from perceiver_cli.core.loading import load_model, model_from_directory
from perceiver_cli.core.models import build_model
from perceiver_cli.core.spec import FLOW_SCALE_FACTOR, NUMERICS, PerceiverSpec, spec_from_config

__all__ = ["load_model", "model_from_directory", "build_model", "spec_from_config", "PerceiverSpec",
           "NUMERICS", "FLOW_SCALE_FACTOR"]
