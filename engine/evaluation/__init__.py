"""Retrieval quality: query sets, metrics, a runner over the engine, reports."""
