"""The operations side: metrics (`metrics.py`), logs (`logs.py`), redaction (`redact.py`)."""
