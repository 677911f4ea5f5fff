"""vidclf: a command-line video classifier (OpenCV frames -> CNN + optical flow -> LSTM)."""

__version__ = "0.1.0"
