"""lightfer: lightweight facial expression recognition trained with label distribution learning.

The library is importable without the pipeline: models, losses, dataset adapters, face
alignment and AU back ends take objects and return objects; only `stages/` knows about
`params.yaml` and file locations.
"""

__version__ = "0.1.0"
