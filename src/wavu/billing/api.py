"""REST API v1 for this app: serializers and viewsets (filled in by the app's owner)."""


def register(router) -> None:
    """Add this app's routes to the v1 router."""
