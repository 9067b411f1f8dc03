"""The embedded synthetic FACS-faces dataset: AU-driven renderer and generator."""
