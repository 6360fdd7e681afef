"""Domains: what a trainer learns from (simulator side, unlabeled real side, labeled test split)."""

from models.domains.base import Domain, RealSplit, get_domain, list_domains, register_domain

__all__ = ["Domain", "RealSplit", "get_domain", "list_domains", "register_domain"]
