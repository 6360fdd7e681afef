"""`/models`: the bundles this server can generate from and predict with."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.deps import CatalogDep, TenantDep
from service.api.schemas import ErrorResponse, ModelList, ModelPublic

router = APIRouter(prefix="/models", tags=["models"], responses={401: {"model": ErrorResponse}})


@router.get("", response_model=ModelList, summary="List bundles")
def list_models(tenant: TenantDep, catalog: CatalogDep) -> ModelList:
    """Every installed bundle with its label layout, sizes and evaluation figures (from its manifest)."""
    items = []
    for b in catalog.list():
        m = b.manifest
        items.append(ModelPublic(
            name=b.name, sha=b.sha, domain=m.get("domain"), trained=m.get("trained"),
            image_size=m.get("image_size"), channels=m.get("channels"), nz=m.get("nz"),
            trainer=m.get("trainer") if isinstance(m.get("trainer"), str) else None,
            layout=m.get("layout") or {}, evaluation=m.get("evaluation"),
        ))
    return ModelList(items=items, count=len(items))
