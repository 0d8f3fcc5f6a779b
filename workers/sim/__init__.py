"""The built-in simulated image API (OpenAI-compatible + lumina queue protocol)."""

from workers.sim.app import RunningSim, build_app, run, running, serve
from workers.sim.config import SimConfig

__all__ = ["RunningSim", "SimConfig", "build_app", "run", "running", "serve"]
