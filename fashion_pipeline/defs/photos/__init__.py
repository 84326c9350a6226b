"""The photos stage: labelled photo sources a user has (FASHION_PHOTO_SOURCES) read into one table."""

import dagster as dg

from fashion_pipeline.defs.photos import assets

defs = dg.Definitions(assets=dg.load_assets_from_modules([assets]))
