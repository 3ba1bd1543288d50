"""SteerNPC training toolkit: SteerLM's four steps (APM, annotate, attribute-conditioned
SFT, bootstrap) plus data converters and a steerability report.

It imports the runtime's `attributes`, `persona` and `prompt`, so that a model is trained
on exactly the strings it is served with; the runtime never imports this package.
"""

from importlib.metadata import PackageNotFoundError, version

try:  # the one version string is pyproject.toml's
    __version__ = version("steernpc")
except PackageNotFoundError:  # a source tree on PYTHONPATH without an install
    __version__ = "0+unknown"
