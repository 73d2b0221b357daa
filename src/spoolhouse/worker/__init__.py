"""Workers: the executor, the in-process Worker, and the process Supervisor."""

from .worker import Worker

__all__ = ["Worker"]
