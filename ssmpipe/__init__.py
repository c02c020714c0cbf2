"""ssmpipe: sweeps of state space model training, from config to Parquet store to reports."""

__version__ = "0.1.0"
