"""Data stages: fetch (IDX/URL/CSV -> CSV), ingest (CSV -> Parquet), validate (GX gate), convert, split."""
