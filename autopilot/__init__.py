"""autopilot: a container supervisor for the Autopilot Pattern (ContainerPilot v3 drop-in)."""

__version__ = "0.1.0"
GIT_HASH = "dev"
