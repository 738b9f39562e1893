"""Subscription jobs (see `wavu/schedule.py`)."""

from wavu.core.tasks import task

from . import services


@task(name="pause-resume")
def resume_due_pauses() -> int:
    """Resume paused services whose planned end of pause has come (idempotent)."""
    return services.resume_due_pauses()
