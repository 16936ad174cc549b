"""Admitad broker applications: adapter, destination, auth, campaigns, rules, staging, SMS codes."""

from worker.platforms.admitad.adapter import AdmitadAdapter
from worker.platforms.admitad.destination import AdmitadDestination

__all__ = ["AdmitadAdapter", "AdmitadDestination"]
