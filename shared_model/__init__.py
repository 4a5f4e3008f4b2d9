"""What every party of a FedUMIT consortium agrees on, byte for byte.

The base checkpoint and its fingerprint, the adapter layout of each stage, the task templates,
target formats, parsers and metrics, collation, export and inference. No Flower, no archive I/O.
"""
