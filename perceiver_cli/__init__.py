"""perceiver-cli: DeepMind's pretrained Perceiver IO models on your own files."""

__version__ = "0.1.0"
