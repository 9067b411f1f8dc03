"""The model's web page and JSON API, served by `lightfer serve` (see `lightfer.web.app`)."""

from lightfer.web.app import DEFAULT_MAX_UPLOAD_MB, create_app

__all__ = ["DEFAULT_MAX_UPLOAD_MB", "create_app"]
