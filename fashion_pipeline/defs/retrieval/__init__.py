"""The retrieval stage: its assets, checks, jobs and schedules, gathered into one Definitions object."""

import dagster as dg

defs = dg.Definitions()
