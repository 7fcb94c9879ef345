"""Reusable Pulumi building blocks for Kubernetes platforms. Nothing in here knows about payments."""
