"""The notebooks' explorers, one module each, drawn on the shared blitting canvas (``canvas``)."""
