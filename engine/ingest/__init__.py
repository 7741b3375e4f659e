"""Catalog ingestion: feed reading, image fetching, the build pipeline."""
