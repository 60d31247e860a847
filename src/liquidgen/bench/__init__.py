"""`liquidgen bench`: speed per backbone preset (`speed.py`), quality per GPU-minute (`quality.py`), and
the markdown tables and plots made from their records (`report.py`)."""
