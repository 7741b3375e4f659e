"""Query vectors by a short key, so "more like this" can page a search later (after a
restart, on another replica sharing the file) without the original photo. A photo's
colour descriptor (engine.colour) is kept beside its vector, so later pages keep the
colour re-score."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np

KEY_CHARS = 16


class QueryExpired(LookupError):
    """The key is unknown: the search was pruned from the store, or never made here."""


class QueryStore:
    """A bounded SQLite (or in-memory) map key -> float16 vector (and colour descriptor);
    oldest entries go first."""

    def __init__(self, path: Path | None, max_entries: int = 200_000) -> None:
        self._max = max_entries
        self._lock = threading.Lock()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path) if path else ":memory:", check_same_thread=False)
        if path is not None:
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS queries (key TEXT PRIMARY KEY, vector BLOB NOT NULL, "
            "used REAL NOT NULL, colour BLOB)"
        )
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(queries)")}
        if "colour" not in columns:  # a store written before colour descriptors
            self._db.execute("ALTER TABLE queries ADD COLUMN colour BLOB")
        self._db.commit()

    def put(self, vector: np.ndarray, colour: np.ndarray | None = None) -> str:
        blob = np.asarray(vector, dtype=np.float16).tobytes()
        key = hashlib.sha256(blob).hexdigest()[:KEY_CHARS]
        colour_blob = None if colour is None else np.asarray(colour, np.float32).tobytes()
        with self._lock:
            self._db.execute(
                "INSERT INTO queries (key, vector, used, colour) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET used = excluded.used, "
                "colour = coalesce(excluded.colour, colour)",
                (key, blob, time.time(), colour_blob),
            )
            count = self._db.execute("SELECT count(*) FROM queries").fetchone()[0]
            if count > self._max:
                self._db.execute(
                    "DELETE FROM queries WHERE key IN "
                    "(SELECT key FROM queries ORDER BY used LIMIT ?)",
                    (count - self._max + self._max // 10,),
                )
            self._db.commit()
        return key

    def get(self, key: str) -> np.ndarray:
        return self.get_with_colour(key)[0]

    def get_with_colour(self, key: str) -> tuple[np.ndarray, np.ndarray | None]:
        """(the vector, the colour descriptor or None) stored under `key`."""
        with self._lock:
            row = self._db.execute(
                "SELECT vector, colour FROM queries WHERE key = ?", (key,)
            ).fetchone()
        if row is None:
            raise QueryExpired(key)
        vector = np.frombuffer(row[0], dtype=np.float16).astype(np.float32)
        colour = None if row[1] is None else np.frombuffer(row[1], dtype=np.float32).copy()
        return vector, colour

    def close(self) -> None:
        with self._lock:
            self._db.close()
