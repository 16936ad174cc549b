"""Admitad broker applications: the adapter, its auth flow, campaigns notation and field rules."""

from worker.platforms.admitad.adapter import AdmitadAdapter, AdmitadDestination

__all__ = ["AdmitadAdapter", "AdmitadDestination"]
