"""Real deployment: the consortium PKI and Flower's own SuperLink and SuperNode processes."""
