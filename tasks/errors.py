"""Errors a user can act on: the CLI prints them as one line, never as a traceback."""


class RoleforgeError(Exception):
    """A mistake in input, arguments or configuration that the user can fix."""


class Preempted(Exception):
    """The machine is going away (spot eviction, SIGTERM): retry elsewhere, from the last checkpoint."""


def is_transient(error: BaseException) -> bool:
    """Errors that heal on retry: preemption and a database that is busy or briefly unreachable."""
    if isinstance(error, Preempted):
        return True
    message = str(error).lower()
    return any(sign in message for sign in ("database is locked", "database is busy", "connection refused", "timed out"))


def retry_transient(task: object, task_run: object, state: object) -> bool:
    """Prefect retry_condition_fn: retry what can heal, fail fast on everything else."""
    try:
        state.result()  # type: ignore[attr-defined]
    except Exception as error:  # noqa: BLE001 - the state's own exception, classified here
        return is_transient(error)
    return False
