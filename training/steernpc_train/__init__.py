"""SteerNPC training toolkit: SteerLM's four steps (APM, annotate, attribute-conditioned
SFT, bootstrap) plus data converters and a steerability report.

It imports the runtime's `attributes`, `persona` and `prompt`, so that a model is trained
on exactly the strings it is served with; the runtime never imports this package.
"""

__version__ = "0.1.0"
