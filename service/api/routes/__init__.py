"""One `APIRouter` per resource: datasets, labeling jobs, predict, models, health."""
