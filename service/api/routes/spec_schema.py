"""`/schemas`: JSON Schemas of request bodies, for clients that build forms (the web console) or validate offline."""

from __future__ import annotations

from fastapi import APIRouter

from models.spec import DatasetSpec
from service.api.deps import TenantDep
from service.api.schemas import ErrorResponse, SpecSchemaDocument

router = APIRouter(prefix="/schemas", tags=["datasets"], responses={401: {"model": ErrorResponse}})


@router.get("/dataset-spec", response_model=SpecSchemaDocument, summary="JSON Schema of a dataset spec")
def dataset_spec_schema(tenant: TenantDep) -> SpecSchemaDocument:
    """The JSON Schema `POST /datasets` and `POST /preview` validate against, with its examples."""
    return SpecSchemaDocument(name="DatasetSpec", json_schema=DatasetSpec.model_json_schema())
