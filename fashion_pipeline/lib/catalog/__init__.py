"""The catalog stage: sites, crawl reports, deduplication, prices and the merged products table."""
