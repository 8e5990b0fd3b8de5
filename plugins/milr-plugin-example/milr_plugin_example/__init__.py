"""An example milr plugin distribution."""
