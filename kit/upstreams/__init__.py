"""What an upstream is: its spec, loaders, the safe checkpoint reader and the demo detector."""
