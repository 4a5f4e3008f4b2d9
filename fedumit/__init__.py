"""FedUMIT command line: one entry point, commands contributed by each package."""
