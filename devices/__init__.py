"""Device edge: protocol parsers, transports, adapters and simulators."""
