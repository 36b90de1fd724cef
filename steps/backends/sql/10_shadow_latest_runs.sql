-- The most recent run for each candidate package (runs without a package are grouped by model),
-- with the package split into its group and version (local `group/3`, SageMaker `arn:...:model-package/group/3`).
CREATE OR REPLACE VIEW {database}.shadow_latest_runs AS
SELECT run_id, started_at, finished_at, endpoint, variant, window_start, window_end,
       production_model, candidate_model, candidate_package, captured, joined, quarantined,
       coverage, decision, report_uri, package_group, package_version
FROM (
    SELECT r.*,
           nullif(regexp_extract(r.candidate_package, '^(?:.*:model-package/)?(.+)/[0-9]+$', 1), '') AS package_group,
           try_cast(nullif(regexp_extract(r.candidate_package, '/([0-9]+)$', 1), '') AS integer) AS package_version,
           row_number() OVER (
               PARTITION BY coalesce(r.candidate_package, r.candidate_model)
               ORDER BY r.started_at DESC, r.run_id DESC
           ) AS recency
    FROM {database}.shadow_runs AS r
) AS ranked
WHERE recency = 1
