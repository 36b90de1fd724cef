-- The most recent run for each candidate package (runs without a package are grouped by model).
-- Portable: runs on DuckDB and on Athena (Trino) as written.
CREATE OR REPLACE VIEW {database}.shadow_latest_runs AS
SELECT run_id, started_at, finished_at, endpoint, variant, window_start, window_end,
       production_model, candidate_model, candidate_package, captured, joined, quarantined,
       coverage, decision, report_uri
FROM (
    SELECT r.*,
           row_number() OVER (
               PARTITION BY coalesce(r.candidate_package, r.candidate_model)
               ORDER BY r.started_at DESC, r.run_id DESC
           ) AS recency
    FROM {database}.shadow_runs AS r
) AS ranked
WHERE recency = 1
