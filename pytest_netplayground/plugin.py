"""pytest plugin: wires options, ini keys, the marker and fixtures to the core."""
