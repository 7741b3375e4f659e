"""The index being served, and switching it for a newly published build while serving."""

from __future__ import annotations

import asyncio
import logging
import threading

from engine.config import Settings
from engine.index import IndexLoadError, VectorIndex, open_index
from engine.store import ModelIdentity, current_build_dir

log = logging.getLogger(__name__)


def open_configured_index(settings: Settings, identity: ModelIdentity) -> VectorIndex:
    """The published index of `index.dir`, opened with the configured checks and search
    settings; refused if it was built with another model."""
    index = settings.index
    return open_index(
        settings.resolve_path(index.dir), identity, index.verify_checksums, index.expansion_search
    )


class ServedIndex:
    """Holds the served build. Readers take `current` once per query, so in-flight
    queries finish on the index they started with while a new build is switched in."""

    def __init__(self, settings: Settings, identity: ModelIdentity, index: VectorIndex) -> None:
        self._settings = settings
        self._identity = identity
        self._index = index
        self._lock = threading.Lock()

    @property
    def current(self) -> VectorIndex:
        return self._index

    def reload_if_changed(self) -> bool:
        """Switch to a newly published build (same model only)."""
        index_dir = self._settings.resolve_path(self._settings.index.dir)
        with self._lock:
            if current_build_dir(index_dir) == self._index.build_dir:
                return False
            fresh = open_configured_index(self._settings, self._identity)
            old, self._index = self._index, fresh
        log.info("switched to index %s (was %s)", fresh.manifest.build_id, old.manifest.build_id)
        return True

    async def watch(self, interval_s: float) -> None:
        """Switch to each newly published build, checking every `interval_s` seconds.
        Whatever goes wrong is logged (once until it changes) and the current build stays
        served; the watching goes on, so the next good build is still picked up."""
        last_problem = ""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await asyncio.to_thread(self.reload_if_changed)
            except IndexLoadError as exc:
                problem = str(exc)
                if problem != last_problem:
                    log.error("not switching to the new index: %s", problem)
            except Exception as exc:  # the watcher must outlive any one bad state
                problem = repr(exc)
                if problem != last_problem:
                    log.exception(
                        "the index reload watcher failed; still serving %s", self._index.build_dir
                    )
            else:
                problem = ""
            last_problem = problem
