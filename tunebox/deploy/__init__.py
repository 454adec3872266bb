"""Deployment renderers: Kubernetes manifests, Ascend device mounts, offline schema checks."""
