-- Records whose label changed between production and the candidate, counted per run and pair.
-- Portable: IS DISTINCT FROM is standard SQL and supported by DuckDB and Athena (Trino).
CREATE OR REPLACE VIEW {database}.shadow_label_flips AS
SELECT run_id,
       production_label,
       candidate_label,
       count(*) AS records
FROM {database}.shadow_records
WHERE production_label IS DISTINCT FROM candidate_label
GROUP BY run_id, production_label, candidate_label
