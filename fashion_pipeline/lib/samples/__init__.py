"""Generated test and demo data, not pipeline logic: a DeepFashion2-format sample and the demo shop site."""
