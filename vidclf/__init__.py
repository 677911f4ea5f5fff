"""vidclf: a command-line video classifier (OpenCV frames -> CNN + optical flow -> LSTM)."""

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """The Python API, imported on first use so that ``vidclf --help`` stays instant:
    ``vidclf.Predictor(model).predict_all(paths)``, ``vidclf.DEFAULT_MODEL``."""
    if name in ("Predictor", "Prediction", "DEFAULT_MODEL"):
        from vidclf import predict

        return getattr(predict, name)
    raise AttributeError(f"module 'vidclf' has no attribute {name!r}")
