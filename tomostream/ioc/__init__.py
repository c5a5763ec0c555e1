"""Channel Access IOCs served from Python with caproto."""

from .runner import IocThread

__all__ = ["IocThread"]
