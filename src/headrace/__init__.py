"""Headrace: a self-hosted Google Cloud Dataflow service."""
